"""The lean training path: a binary conv as one autograd Function that keeps signs and masks, not float copies.

The official code binarizes with composed element-wise ops and the detach trick, so autograd keeps the float input
of every binarizer, its float intermediates and the float sign that the conv saves; a binary network then needs a
multiple of the memory of its float counterpart. :class:`LeanBinaryConv2dFunction` computes
``conv2d(sign(x + shift), B_w(W)) (+ bias)`` in one node and saves only what its backward needs:

* clipped STE input binarizers (``ste_sign``, BNext's ``bnext_sign``): one int8 per element that holds the sign and
  the STE window (``code = sign`` inside the window, ``2 * sign`` outside), 1 byte instead of 4 + 4 + 1;
* ApproxSign (ReActNet): its pseudo-gradient 2 - 2|x| needs the value itself, so the *pre-shift* input is saved
  (often a tensor another node keeps anyway) and the shifted value and the sign are recomputed in backward;
* the weight side saves nothing new: the latent weight is a parameter, and the binarized weight and its STE mask are
  recomputed in backward (a few weight-sized element-wise ops).

Backward re-materialises the float sign and calls ``aten.convolution_backward`` (what autograd calls for
``F.conv2d``), then applies the input STE, sums the gradient of the shift and masks the weight gradient.
The forward is, by construction, the same arithmetic as the module path (same ops in the same order), so it is
bit-identical in every dtype; ``tests/test_lean.py`` checks it against the module path and the official-arithmetic
``"reference"`` path.

Layers choose a path with their ``training_path`` attribute (:func:`set_training_path`); new layers use ``"lean"``.
On the lean path BNext's processors also fuse the float chain after the conv (:mod:`onebit.layers.fused_bnext`) and
ReActNet's PReLUs use :class:`onebit.layers.activations.LeanPReLUFunction`.
The lean Function is used only while autograd records (``torch.is_grad_enabled()``) and only for configurations it
expresses; everything else runs the module path (the per-binarizer autograd Functions of ``onebit.binarize``):

* a layer that does not binarize its input (``binarize_input=False``), or whose input binarizer is not
  ``ste_sign`` / ``bnext_sign`` / ``approx_sign`` (exact classes: a subclass that overrides ``forward`` is not
  assumed to compute the same thing), or whose weight binarizer is not one of ``scaled_sign``,
  ``progressive_sign``, ``ste_sign``, ``bnext_sign``, ``sign_identity_ste``, ``identity``;
* non-zero ``pad_value``, a ``padding_mode`` other than ``"zeros"``, string padding (``"same"``), ``BinaryLinear``;
* any forward hook (module or global) on the layer or its binarizers: hooks must see the tensors they saw before,
  so an observed layer runs the module path (``DynamicsTracker`` hooks keep it lean but unfused, see
  :func:`shift_and_conv`).

Channels-last tensors keep their layout through the Function. Under autocast the conv runs in the autocast dtype
exactly as ``F.conv2d`` would (the sign is exact in bf16/fp16) and the STE and masks in the input's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from onebit.binarize import (
    ApproxSign,
    Identity,
    ProgressiveSign,
    ScaledSign,
    SignIdentitySTE,
    SignSTE,
    progressive_value,
    scaled_sign_value,
    sign,
)
from onebit.config import TrainingPath

__all__ = [
    "TRAINING_PATHS",
    "LeanBinaryConv2dFunction",
    "LeanSpec",
    "lean_binary_conv2d",
    "lean_spec",
    "shift_and_conv",
]

#: ``"lean"``: the fused Function (default); ``"module"``: the binarizer modules' own autograd Functions (what lean
#: falls back to, and the forward before the lean path existed); ``"reference"``: the official composed arithmetic.
#: The choices of :data:`onebit.config.TrainingPath`.
TRAINING_PATHS: tuple[TrainingPath, ...] = get_args(TrainingPath)


@dataclass(frozen=True)
class LeanSpec:
    """What one lean binary conv computes (non-tensor arguments of :class:`LeanBinaryConv2dFunction`).

    Attributes:
        input_kind: ``"ste"`` (pseudo-gradient 1[|x| <= input_clip], no clip: identity) or ``"approx"``
            (ReActNet's max(0, 2 - 2|x|)).
        weight_kind: ``"scaled"`` (alpha * sign(W)), ``"progressive"`` (BNext), ``"sign"`` (sign(W)) or ``"float"``.
        weight_clip: STE window of ``"scaled"`` / ``"sign"`` weights (``None``: identity gradient).
    """

    input_kind: str
    input_clip: float | None
    input_zero: float
    weight_kind: str
    weight_clip: float | None
    weight_zero: float
    threshold: float
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int


def _is(module: nn.Module, cls: type) -> bool:
    """``module`` computes what ``cls`` computes: an instance whose class did not override ``forward``."""
    return isinstance(module, cls) and type(module).forward is cls.forward


def _observed(*modules: nn.Module) -> bool:
    """Whether a forward hook would see tensors of these modules (then the fused Function must not hide them)."""
    from torch.nn.modules import module as _module

    # the global hook dicts are private but stable since torch 1.x; a hook there sees every module call
    if _module._global_forward_pre_hooks or _module._global_forward_hooks:
        return True
    return any(m._forward_pre_hooks or m._forward_hooks for m in modules)


def lean_spec(layer: nn.Module) -> LeanSpec | None:
    """The :class:`LeanSpec` of a ``BinaryConv2d`` in its current state, or ``None`` when the lean Function cannot
    express it (see the module docstring for the cases)."""
    if not getattr(layer, "binarize_input", False) or getattr(layer, "padding_mode", None) != "zeros":
        return None
    if getattr(layer, "pad_value", 0.0) != 0.0 or isinstance(layer.padding, str):
        return None
    ib, wb = layer.input_binarizer, layer.weight_binarizer
    if _is(ib, ApproxSign):
        input_kind, input_clip = "approx", None
    elif _is(ib, SignSTE):  # also BNext's HardSign, whose temperature has no effect on the forward
        input_kind, input_clip = "ste", ib.clip
    else:
        return None
    threshold, weight_clip, weight_zero = 0.0, None, 0.0
    if not layer.binarize_weight or _is(wb, Identity):
        weight_kind = "float"
    elif _is(wb, ScaledSign):
        weight_kind, weight_clip, weight_zero = "scaled", wb.clip, wb.zero
    elif _is(wb, ProgressiveSign):
        weight_kind, threshold, weight_zero = "progressive", wb.threshold, wb.zero
    elif _is(wb, SignSTE):
        weight_kind, weight_clip, weight_zero = "sign", wb.clip, wb.zero
    elif _is(wb, SignIdentitySTE):
        weight_kind, weight_zero = "sign", wb.zero
    else:
        return None
    if _observed(layer, ib, wb):
        return None
    return LeanSpec(
        input_kind,
        input_clip,
        ib.zero,
        weight_kind,
        weight_clip,
        weight_zero,
        threshold,
        tuple(layer.stride),
        tuple(layer.padding),
        tuple(layer.dilation),
        layer.groups,
    )


def _weight_value(w: Tensor, temperature: Tensor | None, spec: LeanSpec) -> Tensor:
    """The binarized weight, with the same ops as the module path (so the forward is bit-identical)."""
    if spec.weight_kind == "scaled":
        return scaled_sign_value(w, spec.weight_zero)
    if spec.weight_kind == "progressive":
        return progressive_value(w, temperature, spec.threshold, spec.weight_zero)
    if spec.weight_kind == "sign":
        return sign(w, spec.weight_zero)
    return w


def _encode(t: Tensor, s: Tensor, clip: float | None) -> Tensor:
    """int8 code of the sign and the STE window: sign inside |t| <= clip, 2 * sign outside (|t| > clip > 0 there,
    so the sign is never 0 outside and the code is unambiguous)."""
    code = s.to(torch.int8)
    if clip is None:
        return code
    return code.add_(code * (t.abs() > clip))


class LeanBinaryConv2dFunction(torch.autograd.Function):
    """``conv2d(sign(x + shift), B_w(W), bias)`` saving int8 signs (or the pre-shift input for ApproxSign).

    Inputs: ``x`` (pre-shift), ``shift`` ([1, C, 1, 1] or ``None``), ``weight`` (latent), ``bias`` (or ``None``),
    ``temperature`` (the progressive binarizer's buffer, else ``None``), ``spec`` (:class:`LeanSpec`).
    """

    @staticmethod
    def forward(ctx, x, shift, weight, bias, temperature, spec: LeanSpec):
        t = x if shift is None else x + shift  # the op LearnableBias runs
        s = sign(t, spec.input_zero)
        wb = _weight_value(weight, temperature, spec)
        # under autocast F.conv2d casts s, wb and bias itself, as in the module path
        out = F.conv2d(s, wb, bias, spec.stride, spec.padding, spec.dilation, spec.groups)
        saved = x if spec.input_kind == "approx" else _encode(t, s, spec.input_clip)
        ctx.save_for_backward(saved, shift, weight, temperature)
        ctx.spec, ctx.x_dtype = spec, x.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        saved, shift, weight, temperature = ctx.saved_tensors
        spec: LeanSpec = ctx.spec
        need_x, need_shift, need_w, need_b = ctx.needs_input_grad[:4]
        need_in = need_x or need_shift
        t = None
        if spec.input_kind == "approx":
            t = saved if shift is None else saved + shift
            s = sign(t, spec.input_zero)
        else:
            s = saved.clamp(-1, 1).to(ctx.x_dtype)
        wb = _weight_value(weight, temperature, spec)
        # the conv ran in g's dtype (the autocast dtype under autocast): cast as autocast did in the forward
        gi, gw, gb = torch.ops.aten.convolution_backward(
            g,
            s.to(g.dtype),
            wb.to(g.dtype),
            [wb.shape[0]] if ctx.bias_dtype is not None else None,
            list(spec.stride),
            list(spec.padding),
            list(spec.dilation),
            False,
            [0] * len(spec.stride),
            spec.groups,
            [need_in, need_w, need_b],
        )
        grad_x = grad_shift = grad_w = grad_b = None
        if need_in:
            gi = gi.to(ctx.x_dtype)
            if spec.input_kind == "approx":
                gi = gi * (2.0 - 2.0 * t.abs()).clamp_min_(0.0)
            elif spec.input_clip is not None:
                gi = gi * (saved.abs() <= 1)
            grad_x = gi if need_x else None
            grad_shift = gi.sum_to_size(shift.shape) if need_shift else None
        if need_w:
            grad_w = gw.to(weight.dtype)
            if spec.weight_kind in ("scaled", "sign") and spec.weight_clip is not None:
                grad_w = grad_w * (weight.abs() <= spec.weight_clip)
        if need_b:
            grad_b = gb.to(ctx.bias_dtype)
        return grad_x, grad_shift, grad_w, grad_b, None, None


def lean_binary_conv2d(
    x: Tensor,
    shift: Tensor | None,
    weight: Tensor,
    bias: Tensor | None,
    spec: LeanSpec,
    temperature: Tensor | None = None,
) -> Tensor:
    """Functional form of :class:`LeanBinaryConv2dFunction` (the latent weight must already be clamped)."""
    if shift is not None and shift.dim() != x.dim():
        raise ValueError(f"the shift must be shaped [1, C, 1, 1] like LearnableBias.bias, got {tuple(shift.shape)}")
    return LeanBinaryConv2dFunction.apply(x, shift, weight, bias, temperature, spec)


def shift_and_conv(conv: nn.Module, shift: nn.Module | None, x: Tensor) -> Tensor:
    """``conv(shift(x))``, with the shift fused into the lean Function when nothing observes the shifted tensor.

    Models call this for a learnable shift right before a binary conv (ReActNet's ``move11``/``move21``, BNext's
    ``move``). The shift is fused only on the lean path, while autograd records, and when neither module has forward
    hooks (``DynamicsTracker`` counts saturation on the conv's input, which must stay the shifted tensor).
    """
    if shift is None:
        return conv(x)
    if (
        getattr(conv, "training_path", None) == "lean"
        and torch.is_grad_enabled()
        and x.dim() == 4
        and not _observed(conv, shift)
        and lean_spec(conv) is not None
    ):
        return conv(x, shift=shift.bias)
    return conv(shift(x))
