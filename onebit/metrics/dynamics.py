"""Training dynamics of BNNs (AdamBNN §3.2): activation saturation, dead weights, CAM/SDAM, update values, peaks.

Functional core (pure functions on tensors) plus a thin stateful :class:`DynamicsTracker` that the training loop
calls around backward and the optimizer step. Everything per step stays on the training device (counts in 0-d
tensors, one copy of the first binary layer's weights); the host reads the device only in the summaries.

* **Activation saturation** (§3.2.1, Fig. 3): share of a binarizer's inputs outside the window where its
  straight-through gradient is non-zero, i.e. |x| > clip for the clipped STE (``SignSTE``, ``HardSign``) and
  |x| > 1 for ``ApproxSign`` (whose gradient 2 - 2|x| also vanishes at |x| = 1 exactly, a null event for real
  inputs). The paper reports 42.5 % (SGD) and 35.5 % (Adam) at the first binary conv of ResNet-18 after one epoch.
* **Dead weights** (§3.2.3): share of binary latent weights whose gradient is exactly zero.
* **CAM** (eq. 3): Channel-wise Absolute Mean, per output channel the mean |w| over input channels and kernel;
  **SDAM** (§3.2.2): the standard deviation of the CAM over the output channels (population form, 1/N).
* **Update values** (Fig. 5): CAM of w_after - w_before of the first binary layer at the latest step.
* **Latent-weight histogram** (Fig. 7): well-trained BNNs show three peaks (near 0 and beyond +-1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from onebit.binarize import ApproxSign, SignSTE
from onebit.layers import binary_layers

__all__ = [
    "DynamicsTracker",
    "cam",
    "histogram",
    "saturation_bound",
    "saturation_share",
    "sdam",
    "zero_grad_share",
]

HIST_BINS = 201
HIST_RANGE = (-1.5, 1.5)


# ---------------------------------------------------------------------------------------------- functional core
def cam(w: Tensor) -> Tensor:
    """Channel-wise Absolute Mean (AdamBNN eq. 3): mean |w| over every dim but the first, shape ``[out]``."""
    w = w.detach()
    return w.abs().flatten(1).mean(dim=1) if w.dim() > 1 else w.abs()


def sdam(w: Tensor) -> float:
    """Standard deviation (population, 1/N) of :func:`cam` over the output channels of ``w``."""
    return float(cam(w).double().std(correction=0))


def saturation_share(x: Tensor, bound: float) -> float:
    """Share of the elements of ``x`` with |x| > ``bound`` (outside the straight-through window)."""
    return float((x.detach().abs() > bound).sum()) / max(x.numel(), 1)


def zero_grad_share(grad: Tensor) -> float:
    """Share of the elements of ``grad`` that are exactly zero."""
    return 1.0 - float(torch.count_nonzero(grad.detach())) / max(grad.numel(), 1)


def saturation_bound(binarizer: nn.Module) -> float | None:
    """|x| beyond which ``binarizer``'s pseudo-gradient is zero, or ``None`` when it has no such window.

    ``SignSTE`` and its subclass ``HardSign``: their ``clip`` (``None``: unclipped, no window); ``ApproxSign``: 1.
    """
    if isinstance(binarizer, SignSTE):
        return None if binarizer.clip is None else float(binarizer.clip)
    if isinstance(binarizer, ApproxSign):
        return 1.0
    return None


def histogram(w: Tensor, bins: int = HIST_BINS, range: tuple[float, float] = HIST_RANGE) -> dict[str, Any]:
    """Histogram of ``w`` over ``range`` with ``bins`` equal bins (the last one closed), out-of-range values apart.

    Returns:
        ``{"edges": Tensor[bins + 1], "counts": Tensor[bins] (int64), "below": int, "above": int}``.
    """
    lo, hi = float(range[0]), float(range[1])
    if not hi > lo or bins < 1:
        raise ValueError(f"histogram needs bins >= 1 and range[1] > range[0], got {bins}, {range}")
    x = w.detach().flatten().double()  # float64: a bin index that does not depend on the weight's dtype
    inside = (x >= lo) & (x <= hi)
    idx = ((x[inside] - lo) * (bins / (hi - lo))).floor_().long().clamp_(max=bins - 1)
    counts = torch.bincount(idx, minlength=bins)
    return {
        "edges": torch.linspace(lo, hi, bins + 1, dtype=torch.float64),
        "counts": counts.cpu(),
        "below": int((x < lo).sum()),
        "above": int((x > hi).sum()),
    }


def _hist_json(h: dict[str, Any]) -> dict[str, Any]:
    return {"edges": h["edges"].tolist(), "counts": h["counts"].tolist(), "below": h["below"], "above": h["above"]}


# ------------------------------------------------------------------------------------------------------ tracker
class DynamicsTracker:
    """Streams saturation, dead-weight and update-value statistics of a model's binary layers.

    Call order in a training step::

        loss.backward(); tracker.after_backward()
        tracker.before_step(); optimizer.step(); tracker.after_step()

    Forward pre-hooks count saturation on every binary layer while it is in training mode with ``binarize_input``
    on (evaluation forwards never count). :meth:`epoch_summary` returns and resets the epoch's numbers;
    :meth:`stage_summary` gives the latent-weight histograms. Under ``torch.distributed`` the summaries sum the
    counts over all ranks (every rank must call them). Build the tracker once the model is on its device, and a new
    one after a rewrite that replaces layers.

    Args:
        model: the model; its binary layers are found by type in registration order, and the first of them is the
            layer of the update-value and ``first_*`` statistics (the paper plots the first binary conv).
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers: dict[str, nn.Module] = dict(binary_layers(model))
        if not self.layers:
            raise ValueError("DynamicsTracker needs a model with at least one binary layer")
        self.names = list(self.layers)
        self.first_layer = self.names[0]
        self._first = self.layers[self.first_layer]
        self.device = self._first.weight.device
        n = len(self.names)
        # epoch accumulators: counts on the device (no sync per step), element totals on the host (known there)
        self._sat_count = [torch.zeros((), dtype=torch.float64, device=self.device) for _ in range(n)]
        self._sat_total = [0] * n
        self._nonzero = [torch.zeros((), dtype=torch.int64, device=self.device) for _ in range(n)]
        self._grad_total = [0] * n
        # update values of the first binary layer: its weights before the step, then w_after - w_before
        self._before: Tensor | None = None
        self._update: Tensor | None = None
        self._hooks = [m.register_forward_pre_hook(self._make_hook(i)) for i, m in enumerate(self.layers.values())]

    # ------------------------------------------------------------------------------------------ per step
    def _make_hook(self, i: int):
        count = self._sat_count[i]

        def hook(module: nn.Module, args: tuple) -> None:
            if not module.training or not module.binarize_input or not args:
                return
            bound = saturation_bound(module.input_binarizer)
            if bound is None:
                return
            x = args[0].detach()
            # abs, in-place compare, float sum: ~3x cheaper than counting a bool mask on CPU. A float32 sum of 0/1 is
            # exact up to 2^24 elements per call (beyond, relative error ~1e-7); the epoch total is float64.
            count.add_(x.abs().gt_(bound).sum(dtype=torch.float32))
            self._sat_total[i] += x.numel()

        return hook

    def after_backward(self) -> None:
        """Count exactly-zero gradients of the binary latent weights (call once per optimizer step).

        A weight that takes part in training (``requires_grad``) but received no gradient counts as all zero.
        """
        for i, m in enumerate(self.layers.values()):
            w = m.weight
            if not w.requires_grad:
                continue
            if w.grad is not None:
                self._nonzero[i].add_(torch.count_nonzero(w.grad.detach()))
            self._grad_total[i] += w.numel()

    @torch.no_grad()
    def before_step(self) -> None:
        """Copy the first binary layer's latent weights (the only copy the tracker keeps)."""
        w = self._first.weight
        if self._before is None or self._before.shape != w.shape:
            self._before = torch.empty_like(w, memory_format=torch.contiguous_format)
        self._before.copy_(w)

    @torch.no_grad()
    def after_step(self) -> None:
        """Update values w_after - w_before of the first binary layer (after :meth:`before_step`)."""
        if self._before is None:
            raise RuntimeError("DynamicsTracker.after_step called without before_step")
        w = self._first.weight
        if self._update is None or self._update.shape != w.shape:
            self._update = torch.empty_like(self._before)
        torch.sub(w, self._before, out=self._update)

    # ------------------------------------------------------------------------------------------ summaries
    def _reduced_counts(self) -> Tensor:
        """[4, L] float64: saturated, inputs seen, non-zero gradients, gradients seen; summed over ranks."""
        counts = torch.stack(
            [
                torch.stack(self._sat_count).double(),
                torch.tensor(self._sat_total, dtype=torch.float64, device=self.device),
                torch.stack(self._nonzero).double(),
                torch.tensor(self._grad_total, dtype=torch.float64, device=self.device),
            ]
        )
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        return counts.cpu()

    def update_stats(self) -> dict[str, list[float]]:
        """Per-kernel (output channel) |update| statistics of the first binary layer at the latest step.

        Returns:
            ``cam`` (mean |u|, Fig. 5's red hyphens), ``std``, ``max`` and ``zero_share`` (share of weights that did
            not move) per output channel; empty lists before the first step.
        """
        if self._update is None:
            return {"cam": [], "std": [], "max": [], "zero_share": []}
        u = self._update.detach().abs().flatten(1).double()
        return {
            "cam": u.mean(1).tolist(),
            "std": u.std(1, correction=0).tolist(),
            "max": u.amax(1).tolist(),
            "zero_share": (u == 0).double().mean(1).tolist(),
        }

    def epoch_summary(self) -> dict[str, Any]:
        """The epoch's numbers (JSON-able), then reset the epoch accumulators.

        Keys: ``saturation`` {layer: share} (layers that measured anything), ``saturation_mean`` (over all inputs
        counted, i.e. element-weighted), ``zero_grad_share`` (overall), ``zero_grad_layers`` {layer: share},
        ``cam_mean`` {layer: mean CAM}, ``sdam`` {layer: SDAM}, ``first_layer``, ``first_cam`` [per output channel],
        ``update_cam_first`` [per output channel, latest step]. Shares are ``None`` when nothing was counted.
        """
        sat, sat_n, nonzero, grad_n = self._reduced_counts()
        saturation = {k: float(sat[i] / sat_n[i]) for i, k in enumerate(self.names) if sat_n[i] > 0}
        zero_layers = {k: float(1 - nonzero[i] / grad_n[i]) for i, k in enumerate(self.names) if grad_n[i] > 0}
        cams = {k: cam(m.weight).double() for k, m in self.layers.items()}
        out = {
            "saturation": saturation,
            "saturation_mean": float(sat.sum() / sat_n.sum()) if sat_n.sum() > 0 else None,
            "zero_grad_share": float(1 - nonzero.sum() / grad_n.sum()) if grad_n.sum() > 0 else None,
            "zero_grad_layers": zero_layers,
            "cam_mean": {k: float(c.mean()) for k, c in cams.items()},
            "sdam": {k: float(c.std(correction=0)) for k, c in cams.items()},
            "first_layer": self.first_layer,
            "first_cam": cams[self.first_layer].tolist(),
            "update_cam_first": self.update_stats()["cam"],
        }
        self.reset()
        return out

    def stage_summary(self) -> dict[str, Any]:
        """Histograms of the binary latent weights (201 bins on [-1.5, 1.5], counts below/above kept apart).

        Keys: ``latent_hist`` (all binary layers together) and ``latent_hist_first`` (the first binary layer), each
        ``{"edges", "counts", "below", "above"}`` as lists and ints. Weights are equal on every rank: no reduction.
        """
        hists = [histogram(m.weight) for m in self.layers.values()]
        total = {
            "edges": hists[0]["edges"],
            "counts": torch.stack([h["counts"] for h in hists]).sum(0),
            "below": sum(h["below"] for h in hists),
            "above": sum(h["above"] for h in hists),
        }
        return {"latent_hist": _hist_json(total), "latent_hist_first": _hist_json(hists[0])}

    # ------------------------------------------------------------------------------------------ state
    def reset(self) -> None:
        """Zero the epoch accumulators (the latest update values stay)."""
        for t in (*self._sat_count, *self._nonzero):
            t.zero_()
        self._sat_total = [0] * len(self.names)
        self._grad_total = [0] * len(self.names)

    def state_dict(self) -> dict[str, Tensor]:
        """The epoch accumulators as CPU int64 tensors of shape [L] (layers in :attr:`names` order)."""
        return {
            "sat_count": torch.stack(self._sat_count).round().long().cpu(),
            "sat_total": torch.tensor(self._sat_total, dtype=torch.int64),
            "grad_nonzero": torch.stack(self._nonzero).cpu(),
            "grad_total": torch.tensor(self._grad_total, dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the epoch accumulators written by :meth:`state_dict` (same model, same binary layers)."""
        n = len(self.names)
        for key in ("sat_count", "sat_total", "grad_nonzero", "grad_total"):
            if key not in state:
                raise KeyError(f"dynamics-tracker state lacks {key!r}")
            if tuple(state[key].shape) != (n,):
                raise ValueError(f"dynamics-tracker state {key!r} has shape {tuple(state[key].shape)}, expected ({n},)")
        for i in range(n):
            # in place: the forward hooks hold these very tensors
            self._sat_count[i].copy_(state["sat_count"][i])
            self._nonzero[i].copy_(state["grad_nonzero"][i])
        self._sat_total = [int(v) for v in state["sat_total"]]
        self._grad_total = [int(v) for v in state["grad_total"]]

    def close(self) -> None:
        """Remove the forward hooks (the tracker stops counting saturation)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
