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
``F.conv2d``), then applies the input STE (in place), sums the gradient of the shift and masks the weight gradient.
For wide k x k convs on CPU (``C_in * k * k >= GEMM_WEIGHT_GRAD_MIN_TAPS``, float32/float64, no autocast) the weight
gradient is instead im2col + MKL GEMM over chunks of samples, gathered straight from the int8 sign (no full-size float
sign), and the input gradient is ``conv_transpose2d``: oneDNN's backward-weights kernel is the slowest part of a
binary network's CPU step there (``tests/test_lean.py`` checks both against autograd in float64).
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


def _encode(t: Tensor, s: Tensor, clip: float | None, t_owned: bool) -> Tensor:
    """int8 code of the sign and the STE window: sign inside |t| <= clip, 2 * sign outside (|t| > clip > 0 there,
    so the sign is never 0 outside and the code is unambiguous). ``t_owned``: ``t`` is a temporary of the forward
    that may be overwritten (saves a full-size float temporary)."""
    code = s.to(torch.int8)
    if clip is None:
        return code
    outside = (t.abs_() if t_owned else t.abs()) > clip
    return code.add_(code * outside)


#: The weight gradient of a k x k conv (k > 1) with at least this many input taps (C_in * kh * kw) is computed as
#: im2col + one GEMM per chunk of samples (:func:`_weight_grad_gemm`): on CPU oneDNN's backward-weights kernel is
#: markedly slower than MKL's GEMM there (512 channels: ~1.3x, 1024 channels: ~2x); below it oneDNN is as fast.
GEMM_WEIGHT_GRAD_MIN_TAPS = 2304
#: Elements of one im2col chunk (16 MiB in float32): bounds the transient memory of :func:`_weight_grad_gemm`.
_COLS_BUDGET = 1 << 22


def _gemm_weight_grad_ok(g: Tensor, weight: Tensor, spec: LeanSpec, x_dtype: torch.dtype) -> bool:
    """Whether :func:`_weight_grad_gemm` computes this conv's weight gradient (CPU, plain 2-d conv, no autocast)."""
    kh, kw = weight.shape[2:] if weight.dim() == 4 else (1, 1)
    return (
        g.device.type == "cpu"
        and g.dim() == 4
        and g.dtype in (torch.float32, torch.float64)
        and g.dtype == x_dtype == weight.dtype
        and spec.groups == 1
        and all(d == 1 for d in spec.dilation)
        and kh * kw > 1
        and weight.shape[1] * kh * kw >= GEMM_WEIGHT_GRAD_MIN_TAPS
    )


def _weight_grad_gemm(g: Tensor, src: Tensor, kernel: tuple[int, int], spec: LeanSpec) -> Tensor:
    """grad_W of ``conv2d(src, W)`` for the output gradient ``g``: im2col of ``src`` (any dtype; cast to g's while it
    is gathered, so an int8 sign never becomes a full-size float tensor) and ``grad_W += g_chunk @ cols^T`` per chunk
    of samples. The same sums as the convolution's backward, in another order."""
    n, c_out, ho, wo = g.shape
    c_in, h, w = src.shape[1:]
    (kh, kw), (sh, sw), (ph, pw) = kernel, spec.stride, spec.padding
    src = src.contiguous()
    xp = F.pad(src, (pw, pw, ph, ph)).contiguous() if ph or pw else src
    hp, wp = h + 2 * ph, w + 2 * pw
    taps = c_in * kh * kw
    nb = max(1, min(n, _COLS_BUDGET // (taps * ho * wo)))
    gw = g.new_zeros((c_out, taps))
    cols_buf = torch.empty((taps * nb * ho * wo,), dtype=g.dtype, device=g.device)
    for n0 in range(0, n, nb):
        b = min(nb, n - n0)
        view = xp.as_strided(
            (c_in, kh, kw, b, ho, wo),
            (hp * wp, wp, 1, c_in * hp * wp, sh * wp, sw),
            xp.storage_offset() + n0 * c_in * hp * wp,
        )
        cols = cols_buf[: taps * b * ho * wo].view(c_in, kh, kw, b, ho, wo).copy_(view).view(taps, b * ho * wo)
        gw.addmm_(g[n0 : n0 + b].transpose(0, 1).reshape(c_out, b * ho * wo), cols.t())
    return gw.view(c_out, c_in, kh, kw)


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
        saved = x if spec.input_kind == "approx" else _encode(t, s, spec.input_clip, t_owned=shift is not None)
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
        gemm = need_w and _gemm_weight_grad_ok(g, weight, spec, ctx.x_dtype)
        t = None
        if spec.input_kind == "approx":
            t = saved if shift is None else saved + shift
            s = sign(t, spec.input_zero)
        elif gemm:
            s = saved.clamp(-1, 1)  # int8: cast to float chunk by chunk inside the im2col
        else:
            s = saved.clamp(-1, 1).to(ctx.x_dtype)
        wb = _weight_value(weight, temperature, spec) if need_in or not gemm else weight
        if gemm:
            gw = _weight_grad_gemm(g, s, weight.shape[2:], spec)
            del s
            gi = gb = None
            if need_in:
                out_pad = [
                    size - (o - 1) * st + 2 * p - k
                    for size, o, st, p, k in zip(
                        saved.shape[2:], g.shape[2:], spec.stride, spec.padding, weight.shape[2:], strict=True
                    )
                ]
                gi = F.conv_transpose2d(g, wb, None, spec.stride, spec.padding, out_pad)
            if need_b:
                gb = g.sum((0, 2, 3))
        else:
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
            del s
        grad_x = grad_shift = grad_w = grad_b = None
        if need_in:
            gi = gi.to(ctx.x_dtype)  # a fresh tensor of this Function: the STE factors apply in place
            if spec.input_kind == "approx":
                # max(0, 2 - 2|t|), the same values as (2 - 2|t|).clamp_min(0)
                f = t.abs_() if shift is not None else t.abs()
                gi.mul_(f.mul_(-2.0).add_(2.0).clamp_min_(0.0))
                del f, t
            elif spec.input_clip is not None:
                gi.mul_(saved.abs() <= 1)
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
