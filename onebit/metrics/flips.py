"""Flip-flop (FF) ratio and correlation-to-initialisation (C2I) ratio (AdamBNN eqs. 4-7).

Functional core (pure functions on tensors) plus a thin stateful tracker that keeps the previous and the initial
signs of every binary layer's latent weights as int8 on the training device (1 byte per weight), so the per-step
cost is one sign, one subtraction and one reduction per layer, and no host sync until the numbers are read.

FF ratio (eqs. 4-5): I_FF = |sign(w_{t+1}) - sign(w_t)| / 2 per weight; FF = sum I_FF / N over all binary layers.
With sign(0) = 0 a weight moving from 0 to +-1 counts one half, exactly as the equation says.

C2I ratio (eqs. 6-7). Eq. 7 as printed, 1 - (1/2) * mean(I_C2I), can never fall below 0.5, yet the paper's Table 1
reports 0.4810 and 0.4960, so the printed equation cannot produce its own table. We report:

* ``c2i``: the sign correlation mean(sign(w_final) * sign(w_init)) = 1 - 2p for p the share of weights whose sign
  differs from initialisation (our reading; it fits the name and Table 1's range: p ~ 0.26 at wd 1e-5),
* ``c2i_changed``: p itself (= mean I_C2I of eq. 6),
* ``c2i_eq7``: the printed eq. 7, 1 - p/2, for comparison.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from onebit.layers import binary_layers

__all__ = ["FlipTracker", "c2i_ratio", "flip_count", "ff_ratio", "signs_int8"]


def signs_int8(w: Tensor) -> Tensor:
    """sign(w) as int8 (sign(0) = 0, the official convention)."""
    return torch.sign(w.detach()).to(torch.int8)


def flip_count(prev_signs: Tensor, w: Tensor) -> Tensor:
    """sum over the tensor of |sign(w) - prev| / 2 (eq. 4), as a float64 scalar tensor (no host sync)."""
    return (signs_int8(w).to(torch.int16) - prev_signs.to(torch.int16)).abs().sum(dtype=torch.float64) / 2


def ff_ratio(prev: list[Tensor], new: list[Tensor]) -> float:
    """FF ratio (eq. 5) of one update over a list of weight tensors given their previous values."""
    total = sum(p.numel() for p in new)
    return float(sum(flip_count(signs_int8(p), n) for p, n in zip(prev, new))) / total


def c2i_ratio(init: list[Tensor], final: list[Tensor]) -> dict[str, float]:
    """C2I metrics of final vs initial weights: ``c2i`` (sign correlation), ``c2i_changed`` (p), ``c2i_eq7``."""
    total = sum(w.numel() for w in final)
    changed = float(sum(flip_count(signs_int8(i), f) for i, f in zip(init, final))) / total
    corr = float(sum((signs_int8(i).float() * signs_int8(f).float()).sum() for i, f in zip(init, final))) / total
    return {"c2i": corr, "c2i_changed": changed, "c2i_eq7": 1.0 - changed / 2}


class FlipTracker:
    """Streams FF per step and C2I against a reference for the latent weights of a model's binary layers.

    Call :meth:`update` after every optimizer step; it returns the step's overall FF ratio as a tensor (read it with
    ``float()`` only when logging). Per-layer flip counts accumulate until :meth:`pop_layer_ratios`.

    Under DistributedDataParallel every rank holds the same weights after each step, so every rank computes the same
    FF and C2I without communicating (build the tracker on the unwrapped model).

    Args:
        weights: ``{layer name: latent weight}`` (see :func:`binary_latent_weights`).
    """

    def __init__(self, weights: dict[str, Tensor]) -> None:
        if not weights:
            raise ValueError("FlipTracker needs at least one binary layer weight")
        self.weights = weights
        self.numel = {k: w.numel() for k, w in weights.items()}
        self.total = sum(self.numel.values())
        self.prev = {k: signs_int8(w) for k, w in weights.items()}
        self.init = {k: s.clone() for k, s in self.prev.items()}
        self._layer_flips = {k: torch.zeros((), dtype=torch.float64, device=s.device) for k, s in self.prev.items()}
        self._layer_steps = 0
        self.last_flips: dict[str, Tensor] = {}

    @classmethod
    def for_model(cls, model: nn.Module) -> FlipTracker:
        return cls(binary_latent_weights(model))

    def reset_reference(self) -> None:
        """Take the current signs as the C2I reference (start of a stage)."""
        self.init = {k: signs_int8(w) for k, w in self.weights.items()}
        self.prev = {k: s.clone() for k, s in self.init.items()}

    @torch.no_grad()
    def update(self) -> Tensor:
        total = torch.zeros((), dtype=torch.float64, device=next(iter(self.prev.values())).device)
        for k, w in self.weights.items():
            s = signs_int8(w)
            flips = (s.to(torch.int16) - self.prev[k].to(torch.int16)).abs().sum(dtype=torch.float64) / 2
            self._layer_flips[k] += flips
            self.last_flips[k] = flips
            total += flips
            self.prev[k] = s
        self._layer_steps += 1
        return total / self.total

    def last_layer_ratios(self) -> dict[str, float]:
        """Per-layer FF ratio of the most recent :meth:`update` (reads the device: call it only when logging)."""
        return {k: float(v) / self.numel[k] for k, v in self.last_flips.items()}

    def pop_layer_ratios(self) -> dict[str, float]:
        """Per-layer FF ratio averaged over the steps since the last call."""
        steps = max(self._layer_steps, 1)
        out = {k: float(v) / (self.numel[k] * steps) for k, v in self._layer_flips.items()}
        for v in self._layer_flips.values():
            v.zero_()
        self._layer_steps = 0
        return out

    @torch.no_grad()
    def c2i(self, reference: dict[str, Tensor] | None = None) -> dict[str, float]:
        """C2I of the current weights against ``reference`` signs (default: the tracker's reference)."""
        ref = reference if reference is not None else self.init
        changed = corr = 0.0
        for k, w in self.weights.items():
            s = signs_int8(w)
            changed += float((s.to(torch.int16) - ref[k].to(torch.int16)).abs().sum(dtype=torch.float64)) / 2
            corr += float((s.to(torch.int16) * ref[k].to(torch.int16)).sum(dtype=torch.float64))
        p = changed / self.total
        return {"c2i": corr / self.total, "c2i_changed": p, "c2i_eq7": 1.0 - p / 2}

    def state_dict(self) -> dict[str, Tensor]:
        """The initial signs and the per-layer sums of the open epoch (so a run resumed inside an epoch reports the
        same per-layer FF ratios as an uninterrupted one)."""
        state = {f"init.{k}": v for k, v in self.init.items()}
        state.update({f"layer_flips.{k}": v.clone() for k, v in self._layer_flips.items()})
        state["layer_steps"] = torch.tensor(self._layer_steps, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for k in self.init:
            key = f"init.{k}"
            if key not in state:
                raise KeyError(f"flip-tracker state lacks {key!r}")
            self.init[k] = state[key].to(torch.int8).to(self.init[k].device)
        # per-layer sums of the open epoch: absent from checkpoints written before they were saved (start from 0)
        for k, v in self._layer_flips.items():
            saved = state.get(f"layer_flips.{k}")
            v.copy_(saved.to(v.device, v.dtype) if saved is not None else torch.zeros_like(v))
        self._layer_steps = int(state["layer_steps"]) if "layer_steps" in state else 0
        self.prev = {k: signs_int8(w) for k, w in self.weights.items()}


def binary_latent_weights(model: nn.Module) -> dict[str, Tensor]:
    """``{layer name: latent weight}`` of every binary conv/linear layer (whatever its current stage switches)."""
    return {name: m.weight for name, m in binary_layers(model)}
