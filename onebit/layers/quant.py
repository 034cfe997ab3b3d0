"""Quantised layers and the ``quantize_`` rewrite: post-training quantisation of the real-valued layers of a binary
network (BNext §7.5, eqs. 5-6; Table 7).

A BNN keeps a few layers real-valued: the input (stem) conv, the squeeze-and-expand (SE) convs of every Info-RCP
processor and the classifier. :func:`quantize_` swaps them, in place, for :class:`QuantConv2d` / :class:`QuantLinear`,
which quantise their weight and their input activation with asymmetric min-max quantisation::

    model = create_model("bnext_tiny")
    report = quantize_(model, QuantConfig.from_bits("8/8-4/8-4/8-8/8"))   # I-S-E-O, each W/A
    finetune(model, train_loader, epochs=5)   # onebit.quantize; optional: AdamW, lr 1e-7, binary frozen

**I-S-E-O** (our reading of Table 7 with Table 1 and §7.5): *I* = the input (stem) conv, *S* = the squeeze conv of
every SE branch (C -> C/8, official ``se.se.1``), *E* = the expand conv (C/8 -> C, ``se.se.3``), *O* = the output
classifier; each group is "weight bits / input-activation bits" of those layers. Table 1's three-group "8/8-4/8-8/8"
is I-SE-O with S = E; the text under Table 7 ("decreasing the bit-width of weights in SE branch to 4 bits (with 8-bit
activations)") confirms S and E are the two SE convs and W/A the order. 32 bits means "not quantised".

**The quantiser** (``utils_quant.AsymQuantizer`` of the official code; ``docs/official-code.md``, *Quantised BNext*).
For a group of values v (clipped first to [lo, hi] by the layer's clip buffer), with L = 2^b - 1:

    mn = min(v), mx = max(v), d = (mx - mn) + 1e-8
    code = round((v - mn) / d * L)                        (an integer in 0..L)
    q = code / L * d + mn                                 (eq. 5 with α = L / (mx - mn), β = mn)

*Weights* (eq. 6): s = ``weight_scale`` · mean|W| per output channel (detached; the official code uses 2x the
abs-mean, the paper's eq. 6 says the abs-mean; for min-max quantisation the factor only matters through the clip),
v = clip(W / s) with clip ±1000 for convs and ±25 for the classifier, groups = each output row over its inputs for
1x1 convs and linear layers, each (out, in) kernel over its k·k taps for k > 1 (the stem), and W_q = q · s.
*Activations*: dynamic per sample, as official: a [N, C, 1, 1] (SE) or [N, C] (classifier) input is quantised per
sample over its channels; a [N, C, H, W] input with H·W > 1 per (sample, channel) over space (the official 4-D rule).
Classifier inputs are clipped to ±25, conv inputs to ±1000. The first layer's input (the image) is left alone at 8 or
more bits — the official rule "a 3-channel conv at 8 bits is not quantised", generalised to any channel count since
images are 8-bit data already; ``image_input=True/False`` overrides.
``activations="calibrated"`` instead uses one static range per layer, recorded by :func:`calibrate` (min/max over a
few batches) — what integer-only inference needs; values outside the range saturate.
*Gradients*: straight-through, zero where the (scaled) input reached the clip range (``>= hi`` or ``<= lo``, as
official); the rounding is invisible to autograd.

**Codes for export.** :meth:`QuantMixin.weight_codes` returns the uint8 codes, the bits and the float tensors that
reconstruct bit-exactly the weight the forward uses (see its docstring for the formula).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onebit.layers.se import SqueezeExpand

__all__ = [
    "DEFAULT_BITS",
    "ROLES",
    "QuantConfig",
    "QuantConv2d",
    "QuantLinear",
    "QuantMixin",
    "asym_dequantize",
    "asym_quantize",
    "activation_dims",
    "asym_quantize_codes",
    "quant_layers",
    "quantize_",
]

#: The paper's final BNext setting (Table 7, row 3): W8/A8 stem and classifier, W4/A8 SE convs.
DEFAULT_BITS = "8/8-4/8-4/8-8/8"
#: The four groups of an I-S-E-O string, in order.
ROLES = ("input", "squeeze", "expand", "output")
#: Bits meaning "left in floating point".
FLOAT_BITS = 32
#: Added to the range in the denominator (official ``AsymQuantizer``): a constant group quantises to itself.
EPS = 1e-8
_WEIGHT_BITS = (*range(2, 9), FLOAT_BITS)  # codes are stored as uint8
_ACT_BITS = (*range(2, 17), FLOAT_BITS)
_ACTIVATION_MODES = ("dynamic", "calibrated")


# ---------------------------------------------------------------------------------------------------- functional core
def asym_quantize_codes(
    v: Tensor, bits: int, dims: int | Sequence[int], value_range: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric min-max quantisation codes of ``v`` (eq. 5; official ``AsymQuantizer``).

    Args:
        v: values to quantise.
        bits: b; there are 2^b levels.
        dims: the dimensions reduced for min/max (one (min, max) pair per remaining index).
        value_range: a static ``(mn, mx)`` instead of the min/max of ``v``; ``v`` is clamped into it first.

    Returns:
        ``(codes, mn, mx)``: codes = round((v - mn) / (mx - mn + 1e-8) · (2^b - 1)), integral values in the dtype of
        ``v``; mn, mx broadcastable to ``v``.
    """
    if value_range is None:
        mn, mx = v.amin(dim=dims, keepdim=True), v.amax(dim=dims, keepdim=True)
    else:
        mn, mx = value_range
        v = torch.minimum(torch.maximum(v, mn), mx)
    levels = 2**bits - 1
    return torch.round((v - mn) / (mx - mn + EPS) * levels), mn, mx


def asym_dequantize(codes: Tensor, mn: Tensor, mx: Tensor, bits: int) -> Tensor:
    """codes / (2^b - 1) · (mx - mn + 1e-8) + mn, in this order (the official expression, bit for bit)."""
    return codes / (2**bits - 1) * (mx - mn + EPS) + mn


def asym_quantize(
    v: Tensor, bits: int, dims: int | Sequence[int], value_range: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """The quantised values of ``v``: :func:`asym_dequantize` of :func:`asym_quantize_codes` (no gradient rule)."""
    codes, mn, mx = asym_quantize_codes(v, bits, dims, value_range)
    return asym_dequantize(codes, mn, mx, bits)


def _clip(x: Tensor, clip_val: Tensor) -> Tensor:
    # min with hi, then max with lo, like the official two torch.where's (torch.clamp would differ for lo > hi).
    return torch.maximum(torch.minimum(x, clip_val[1]), clip_val[0])


class _ClipQuantSTE(torch.autograd.Function):
    """Forward: clip to ``clip_val`` then :func:`asym_quantize`. Backward: identity, zero where x >= hi or x <= lo."""

    @staticmethod
    def forward(ctx, x, clip_val, bits, dims, value_range):  # type: ignore[override]
        ctx.save_for_backward(x, clip_val)
        return asym_quantize(_clip(x, clip_val), bits, dims, value_range)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, clip_val = ctx.saved_tensors
        keep = (x < clip_val[1]) & (x > clip_val[0])
        return torch.where(keep, grad, torch.zeros_like(grad)), None, None, None, None


def activation_dims(x: Tensor) -> tuple[int, ...]:
    if x.dim() == 4 and x.shape[2] * x.shape[3] > 1:
        return (2, 3)  # per (sample, channel) over space: the official 4-D branch
    return tuple(range(1, x.dim()))  # [N, C] or [N, C, 1, 1]: per sample over channels


# ---------------------------------------------------------------------------------------------------------- config
def _parse_pair(text: str, role: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None:
        raise ValueError(f"bits for {role!r}: expected 'W/A' like '8/8' or '4/8', got {text!r}")
    return int(m.group(1)), int(m.group(2))


@dataclass
class QuantConfig:
    """What :func:`quantize_` quantises and how.

    Attributes:
        input, squeeze, expand, output: ``(weight_bits, activation_bits)`` of the I-S-E-O groups (see the module
            docstring). Weight bits 2..8 or 32 (32 = float), activation bits 2..16 or 32.
        weight_scale: the per-output-channel weight scale is ``weight_scale · mean|W|`` (2.0 official code, 1.0 the
            paper's eq. 6).
        conv_clip, linear_clip: clip values (±) of the scaled weights and of the inputs of convs and of the
            classifier (official 1000 and 25).
        activations: ``"dynamic"`` (official: per-sample min/max at run time) or ``"calibrated"`` (one static range
            per layer from :func:`calibrate`).
        image_input: quantise the first layer's input: ``None`` = only below 8 bits (official rule), or force.
        quantize_w32: pass 32-bit weights through the quantiser with 2^32 - 1 levels, as the official
            ``QuantizeConv`` does (``se_bits=32``); about one ulp away from the float weight. ``False``: 32-bit
            weights stay float.
    """

    input: tuple[int, int] = (8, 8)
    squeeze: tuple[int, int] = (4, 8)
    expand: tuple[int, int] = (4, 8)
    output: tuple[int, int] = (8, 8)
    weight_scale: float = 2.0
    conv_clip: float = 1000.0
    linear_clip: float = 25.0
    activations: str = "dynamic"
    image_input: bool | None = None
    quantize_w32: bool = False

    def __post_init__(self) -> None:
        for role in ROLES:
            pair = getattr(self, role)
            if isinstance(pair, str):
                pair = _parse_pair(pair, role)
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"QuantConfig.{role} must be (weight_bits, activation_bits), got {pair!r}")
            w, a = (int(b) for b in pair)
            if w not in _WEIGHT_BITS:
                raise ValueError(f"QuantConfig.{role}: weight bits must be 2..8 or 32 (float), got {w}")
            if a not in _ACT_BITS:
                raise ValueError(f"QuantConfig.{role}: activation bits must be 2..16 or 32 (float), got {a}")
            setattr(self, role, (w, a))
        if self.activations not in _ACTIVATION_MODES:
            raise ValueError(f"QuantConfig.activations must be one of {_ACTIVATION_MODES}, got {self.activations!r}")
        if not self.weight_scale > 0:
            raise ValueError(f"QuantConfig.weight_scale must be positive, got {self.weight_scale}")
        if not (self.conv_clip > 0 and self.linear_clip > 0):
            raise ValueError(f"clip values must be positive, got conv {self.conv_clip}, linear {self.linear_clip}")

    @classmethod
    def from_bits(cls, bits: str, **kw: Any) -> QuantConfig:
        """Parse an I-S-E-O string ``"8/8-4/8-4/8-8/8"`` (or one ``"W/A"`` for all four groups).

        Raises:
            ValueError: not four (or one) ``W/A`` groups separated by ``-``, or bits out of range.
        """
        if not isinstance(bits, str):
            raise TypeError(f"bits must be a string like {DEFAULT_BITS!r}, got {type(bits).__name__}")
        parts = bits.split("-")
        if len(parts) == 1:
            parts = parts * len(ROLES)
        if len(parts) != len(ROLES):
            raise ValueError(
                f"bits {bits!r}: expected 4 groups I-S-E-O (input, SE squeeze, SE expand, output), each 'W/A', "
                f"e.g. {DEFAULT_BITS!r}; got {len(parts)}"
            )
        pairs = {role: _parse_pair(p, role) for role, p in zip(ROLES, parts)}
        return cls(**pairs, **kw)

    @property
    def bits(self) -> str:
        """The I-S-E-O string of this config."""
        return "-".join(f"{w}/{a}" for w, a in (getattr(self, r) for r in ROLES))

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown QuantConfig fields {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


# ---------------------------------------------------------------------------------------------------------- modules
class QuantMixin:
    """Weight and input quantisation shared by :class:`QuantConv2d` and :class:`QuantLinear`.

    The float weight stays the parameter (fine-tuning updates it); the forward uses :meth:`quantized_weight`.
    """

    weight: nn.Parameter
    weight_clip_val: Tensor
    weight_bits: int
    act_bits: int
    weight_scale: float
    quantize_input: bool
    quantize_w32: bool
    activations: str
    _act_clip_name: str

    def _init_quant(
        self,
        weight_bits: int,
        act_bits: int,
        clip: float,
        weight_scale: float,
        quantize_input: bool,
        activations: str,
        quantize_w32: bool,
    ) -> None:
        if weight_bits not in _WEIGHT_BITS or act_bits not in _ACT_BITS:
            raise ValueError(
                f"weight bits must be 2..8 or 32, activation bits 2..16 or 32; got {weight_bits}/{act_bits}"
            )
        if activations not in _ACTIVATION_MODES:
            raise ValueError(f"activations must be one of {_ACTIVATION_MODES}, got {activations!r}")
        self.weight_bits, self.act_bits = int(weight_bits), int(act_bits)
        self.weight_scale = float(weight_scale)
        self.quantize_input = bool(quantize_input)
        self.quantize_w32 = bool(quantize_w32)
        self.activations = activations
        like = dict(device=self.weight.device, dtype=self.weight.dtype)
        register = self.register_buffer  # type: ignore[attr-defined]
        # [lo, hi] clip values, buffers under the official names (state dicts of the released quantised models).
        register("weight_clip_val", torch.tensor([-clip, clip], **like))
        register(self._act_clip_name, torch.tensor([-clip, clip], **like))
        if activations == "calibrated" and self.quantizes_input:
            # (min, max) of the layer input over the calibration batches; NaN until calibrate() ran.
            register("act_range", torch.full((2,), float("nan"), **like))
        self._observing = False

    @property
    def input_clip_val(self) -> Tensor:
        """The input clip buffer (official names: ``activation_clip_val`` on convs, ``act_clip_val`` on linear)."""
        return getattr(self, self._act_clip_name)

    @property
    def quantizes_weight(self) -> bool:
        """The weight has integer codes (fewer than 32 bits); 32-bit weights with ``quantize_w32`` are not counted."""
        return self.weight_bits < FLOAT_BITS

    @property
    def quantizes_input(self) -> bool:
        return self.quantize_input and self.act_bits < FLOAT_BITS

    def _weight_dims(self) -> tuple[int, ...]:
        w = self.weight
        if w.dim() == 4 and w.shape[2] * w.shape[3] > 1:
            return (2, 3)  # each (out, in) kernel over its taps (the official 4-D rule; the 3x3 / 7x7 stem)
        return tuple(range(1, w.dim()))  # 1x1 convs and linear layers: each output row over its inputs

    def _weight_scale(self, w: Tensor) -> Tensor:
        a = w.detach().abs()
        # Means taken one dimension at a time, last first, as the official QuantizeConv does (same value up to the
        # float summation order, which decides rounding ties of the codes).
        for d in range(w.dim() - 1, 0, -1):
            a = a.mean(dim=d, keepdim=True)
        s = self.weight_scale * a
        # An all-zero row would give 0/0; the official code produces NaN there, we quantise the zeros to zeros.
        return torch.where(s > 0, s, torch.ones_like(s))

    def quantized_weight(self) -> Tensor:
        """The weight the forward uses (with the straight-through gradient to the float weight)."""
        w = self.weight
        if not (self.quantizes_weight or self.quantize_w32):
            return w
        s = self._weight_scale(w)
        return _ClipQuantSTE.apply(w / s, self.weight_clip_val, self.weight_bits, self._weight_dims(), None) * s

    @torch.no_grad()
    def weight_codes(self) -> dict[str, Any]:
        """The integer weight codes and what reconstructs the forward's weight bit-exactly.

        Returns:
            ``{"codes": uint8 tensor (weight shape), "bits": b, "min": mn, "max": mx, "scale": s, "eps": 1e-8,
            "group_dims": dims}`` with mn, mx, s float tensors of the weight's dtype broadcastable to the weight
            (mn, mx: one per quantisation group, s: one per output channel). In that dtype and this order::

                W_q = (codes.to(dtype) / (2**bits - 1) * (max - min + 1e-8) + min) * scale

            equals :meth:`quantized_weight` bitwise (tested).

        Raises:
            ValueError: the layer keeps a float weight (32 bits).
        """
        if not self.quantizes_weight:
            raise ValueError(f"{type(self).__name__}: a 32-bit (float) weight has no 8-bit integer codes")
        w = self.weight
        s = self._weight_scale(w)
        dims = self._weight_dims()
        codes, mn, mx = asym_quantize_codes(_clip(w / s, self.weight_clip_val), self.weight_bits, dims)
        return {
            "codes": codes.to(torch.uint8),
            "bits": self.weight_bits,
            "min": mn.clone(),
            "max": mx.clone(),
            "scale": s.clone(),
            "eps": EPS,
            "group_dims": dims,
        }

    def quantized_input(self, x: Tensor) -> Tensor:
        """The input as the layer sees it: clipped and quantised (dynamic or calibrated), or unchanged."""
        if not self.quantizes_input:
            return x
        if self._observing:
            # Calibration: record the clipped range, compute with the float input meanwhile.
            c = _clip(x.detach(), self.input_clip_val)
            r = self.act_range
            lo, hi = c.amin().to(r.dtype), c.amax().to(r.dtype)
            r[0] = lo if torch.isnan(r[0]) else torch.minimum(r[0], lo)
            r[1] = hi if torch.isnan(r[1]) else torch.maximum(r[1], hi)
            return x
        value_range = None
        if self.activations == "calibrated":
            r = self.act_range
            if torch.isnan(r).any():
                raise RuntimeError(
                    f"{type(self).__name__} uses calibrated activation ranges but was never calibrated: run "
                    "onebit.quantize.calibrate(model, loader) first"
                )
            value_range = (r[0], r[1])
        return _ClipQuantSTE.apply(x, self.input_clip_val, self.act_bits, activation_dims(x), value_range)

    def _quant_repr(self) -> str:
        a = f"A{self.act_bits}" if self.quantizes_input else "A32 (input not quantised)"
        return f"W{self.weight_bits}/{a}, weight_scale={self.weight_scale}, activations={self.activations!r}"


class QuantConv2d(QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` with quantised weight and input (official ``QuantizeConv``; buffers ``weight_clip_val``,
    ``activation_clip_val`` = [-clip, clip]). With 32/32 bits it equals ``nn.Conv2d``."""

    _act_clip_name = "activation_clip_val"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        *,
        weight_bits: int = 8,
        act_bits: int = 8,
        clip: float = 1000.0,
        weight_scale: float = 2.0,
        quantize_input: bool = True,
        activations: str = "dynamic",
        quantize_w32: bool = False,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype
        )
        self._init_quant(weight_bits, act_bits, clip, weight_scale, quantize_input, activations, quantize_w32)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"


class QuantLinear(QuantMixin, nn.Linear):
    """``nn.Linear`` with quantised weight and input (official ``QuantizeLinear``; buffers ``weight_clip_val``,
    ``act_clip_val`` = [-clip, clip]). With 32/32 bits it equals ``nn.Linear``."""

    _act_clip_name = "act_clip_val"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        weight_bits: int = 8,
        act_bits: int = 8,
        clip: float = 25.0,
        weight_scale: float = 2.0,
        quantize_input: bool = True,
        activations: str = "dynamic",
        quantize_w32: bool = False,
    ) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_quant(weight_bits, act_bits, clip, weight_scale, quantize_input, activations, quantize_w32)

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(self.quantized_input(x), self.quantized_weight())
        # The bias is added after the product, as the official QuantizeLinear does (not fused into addmm).
        return out + self.bias if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._quant_repr()}"


def quant_layers(model: nn.Module) -> Iterable[tuple[str, QuantMixin]]:
    """(name, module) of every quantised layer, in registration order."""
    for name, m in model.named_modules():
        if isinstance(m, QuantMixin):
            yield name, m


# ---------------------------------------------------------------------------------------------------------- rewrite
def _targets(model: nn.Module) -> dict[str, str]:
    """{module name: role} of the layers I-S-E-O refers to: first plain conv, SE convs, last linear."""
    roles: dict[str, str] = {}
    named = list(model.named_modules())
    convs = [n for n, m in named if type(m) is nn.Conv2d]
    if convs:
        roles[convs[0]] = "input"
    for n, m in named:
        if isinstance(m, SqueezeExpand):
            prefix = f"{n}.se" if n else "se"
            roles[f"{prefix}.1"] = "squeeze"
            roles[f"{prefix}.3"] = "expand"
    linears = [n for n, m in named if type(m) is nn.Linear]
    if linears:
        roles[linears[-1]] = "output"
    return roles


def quantize_(model: nn.Module, cfg: QuantConfig | str | None = None) -> dict[str, Any]:
    """Swap the stem conv, the SE convs and the classifier for quantised layers, in place (weights copied).

    The stem is the first plain ``nn.Conv2d`` in module order, the SE convs those of every
    :class:`~onebit.models.bnext.SqueezeExpand`, the classifier the last plain ``nn.Linear``; binary layers are
    never touched. A model built by a registered entrypoint gets an ``onebit_spec`` of the ``quantized`` entrypoint
    (``onebit.models.bnext_quant``), so ``save_model_dir`` / ``load_model`` rebuild it.

    Args:
        model: the network (float or binary).
        cfg: a :class:`QuantConfig`, an I-S-E-O string, or ``None`` for :data:`DEFAULT_BITS`.

    Returns:
        ``{"bits": "8/8-4/8-4/8-8/8", "activations": mode, "layers": {name: {"role", "weight_bits", "act_bits",
        "input_quantized"}}}``.

    Raises:
        ValueError: the model is already quantised, or has none of the four kinds of layer.
    """
    if cfg is None:
        cfg = QuantConfig.from_bits(DEFAULT_BITS)
    elif isinstance(cfg, str):
        cfg = QuantConfig.from_bits(cfg)
    if any(True for _ in quant_layers(model)):
        raise ValueError("the model already has quantised layers; quantize_ applies to an unquantised model")
    roles = _targets(model)
    if not roles:
        raise ValueError(f"{type(model).__name__} has no plain Conv2d/Linear layer to quantise (stem, SE, classifier)")
    layers: dict[str, dict[str, Any]] = {}
    for name, role in roles.items():
        old = model.get_submodule(name)
        w_bits, a_bits = getattr(cfg, role)
        if role == "input":
            quant_in = a_bits < 8 if cfg.image_input is None else cfg.image_input
        else:
            quant_in = True
        common = dict(
            weight_bits=w_bits,
            act_bits=a_bits,
            weight_scale=cfg.weight_scale,
            quantize_input=quant_in,
            activations=cfg.activations,
            quantize_w32=cfg.quantize_w32,
            device=old.weight.device,
            dtype=old.weight.dtype,
        )
        if isinstance(old, nn.Conv2d):
            new: nn.Module = QuantConv2d(
                old.in_channels,
                old.out_channels,
                old.kernel_size,
                old.stride,
                old.padding,
                old.dilation,
                old.groups,
                old.bias is not None,
                old.padding_mode,
                clip=cfg.conv_clip,
                **common,
            )
        else:
            new = QuantLinear(old.in_features, old.out_features, old.bias is not None, clip=cfg.linear_clip, **common)
        with torch.no_grad():
            new.weight.copy_(old.weight)
            if old.bias is not None:
                new.bias.copy_(old.bias)
        new.train(old.training)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        layers[name] = {
            "role": role,
            "weight_bits": w_bits,
            "act_bits": a_bits,
            "input_quantized": new.quantizes_input,
        }
    spec = getattr(model, "onebit_spec", None)
    if spec is not None:
        model.onebit_spec = {"name": "quantized", "kwargs": {"base": spec, "quant": cfg.to_dict()}}
    return {"bits": cfg.bits, "activations": cfg.activations, "layers": layers}
