"""``pack_(model)``: swap binary convolutions for packed XOR-popcount inference modules, fusing known blocks.

This module is the generic engine (:class:`PackedConv2d`, :class:`PackConfig`, :func:`pack_` and the fuser registry
:data:`FUSERS`); the model-specific fused modules and their fusers live in :mod:`onebit.kernels.fuse`, which
registers them.

* Every :class:`~onebit.layers.BinaryConv2d` whose forward is sign(input) ⊛ (α_o · sign(W)) — any sign-type input
  binarizer (``approx_sign``, ``ste_sign``, ``bnext_sign``), any weight binarizer whose eval output is ±α per output
  channel (``scaled_sign``, ``sign_identity_ste``, ``progressive_sign`` once its temperature is below the
  threshold) — becomes a :class:`PackedConv2d`. Layers that are not binary in eval (a progressive binarizer still
  soft, real weights of a step-1 model, groups/dilation) stay in float; the report
  says which and why.
* Fusions (weights binarized once, per-channel affine folded into the popcount epilogue):
  ReActNet-A blocks → :class:`FusedReActBlock` (shift, sign+pack, 3x3 conv, BN, residual, RPReLU, the next sign+pack,
  1x1 conv(s), BN, residual, RPReLU and the sign+pack of the *next block's* input, in two kernel calls);
  BNext processors → shift, BN₁ and PReLU_b folded into the packed conv; Bi-Real style ResNet blocks → the shift
  ``move0`` and ``bn1`` folded into the packed conv. Everything else runs in float, unchanged.

Packed modules are inference-only: ``pack_`` refuses a model in training mode, and their forward refuses an input
that requires grad. sign(0): the packed world maps an exact 0 to +1; the float models give 0 (no effect unless an
activation is exactly 0 after its shift).

Contract. For every input a packed model returns what the eval model returns (to float32 rounding: BN/α folding,
pooled sums; the tests compare with a float64 copy of the eval model, 1e-4 of the largest logit; a sign input within
float32 rounding of 0 may binarize either way, as it may between the float32 and float64 eval models) or raises the
error the eval model raises, of the same type: shape, dtype and device problems raise
:class:`~onebit.kernels._native.KernelArgumentError`, which is a ``RuntimeError`` (the type ``F.conv2d``,
``F.avg_pool2d`` and broadcasting raise) and a ``ValueError`` (the type ``BatchNorm2d`` raises for a 3-D input).
Where the eval model broadcasts (a stride-2 block on an odd input whose pooled residual is 1 pixel wide), the packed
model broadcasts too; where it refuses, the packed model refuses before any kernel call. A batch of 0 gives an
empty output, as the eval model. Packed modules compute in float32 and refuse other input dtypes, as the float32
layers they replace (a floating input is converted only under autocast). NaN and ±inf: the float parts of a packed
model (stem, BN, residuals, pooling, head) are the eval model's operations and carry NaN/inf exactly as it does; a
binary conv reads a NaN input as it reads an exact 0, as +1 — the float sign gives NaN and 0 the same value, 0, which
one bit cannot hold; so a packed model equals the eval model whose input signs map 0 and NaN to +1 (what the fuzz
tests compare with: ``tests/test_packed_fuzz.py``). In the registered models a NaN/inf input pixel makes the logits
of its image NaN in both, except where a stride-2 shortcut skips the pixel (the binary branch then decides).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from onebit.binarize import ApproxSign, Identity, SignSTE
from onebit.kernels import _native
from onebit.kernels._native import KernelArgumentError
from onebit.kernels.ops import (
    ConvEpilogue,
    PackedWeight,
    binary_conv,
    pack_activations,
    pack_weight,
    resolve_backend,
)
from onebit.layers.activations import LearnableBias
from onebit.layers.binary import BinaryConv2d

__all__ = [
    "BACKENDS",
    "FUSERS",
    "Backend",
    "KernelArgumentError",
    "PackConfig",
    "PackReport",
    "PackedConv2d",
    "binary_weight_signs",
    "pack_",
    "register_fuser",
]

#: Kernel backends of the packed engine (see :func:`onebit.kernels.ops.resolve_backend`).
Backend = Literal["auto", "native", "torch", "int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)


@dataclass
class PackConfig:
    """How :func:`pack_` packs a model.

    Attributes:
        fuse: fuse the blocks the registered fusers know (ReActNet-A blocks, BNext processors, Bi-Real ResNet
            blocks) — weights binarized once, per-channel affine folded into the popcount epilogue.
        backend: ``"auto"`` (per call: the int8 GEMM for CUDA tensors, else the compiled kernel when it loads),
            ``"native"``, ``"torch"`` (the pure-torch reference; ``ONEBIT_KERNELS=torch`` forces it on CPU) or
            ``"int8"`` (``torch._int_mm``, CPU or CUDA).
    """

    fuse: bool = True
    backend: Backend = "auto"

    def __post_init__(self) -> None:
        if self.backend is None:
            self.backend = "auto"
        if self.backend not in BACKENDS:
            raise ValueError(f"PackConfig.backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not isinstance(self.fuse, bool):
            raise ValueError(f"PackConfig.fuse must be a bool, got {self.fuse!r}")


#: A fuser swaps the blocks of one model family for fused packed modules, in place, and records what it did in the
#: report: ``fuser(model, report, backend)``. :func:`pack_` runs every registered fuser (in registration order) before
#: packing the remaining binary convs one by one.
Fuser = Callable[[nn.Module, "PackReport", "str | None"], None]
FUSERS: list[Fuser] = []


def register_fuser(fn: Fuser) -> Fuser:
    """Register a fuser for :func:`pack_` (usable as a decorator)."""
    FUSERS.append(fn)
    return fn


@dataclass
class PackReport:
    """What :func:`pack_` did: ``packed`` (module name -> description), ``float_layers`` (name -> reason it stays in
    float), ``fused`` (block name -> pattern) and ``backend`` (:func:`onebit.kernels.backend_info`)."""

    packed: dict[str, str] = field(default_factory=dict)
    float_layers: dict[str, str] = field(default_factory=dict)
    fused: dict[str, str] = field(default_factory=dict)
    backend: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "packed": self.packed,
            "float_layers": self.float_layers,
            "fused": self.fused,
            "backend": self.backend,
        }


def _not_packable(conv: BinaryConv2d) -> str | None:
    """Why ``conv`` cannot run packed (``None`` when it can)."""
    if not (conv.binarize_input and conv.binarize_weight):
        return "input or weight not binarized (binarize_input/binarize_weight off)"
    if not isinstance(conv.input_binarizer, (SignSTE, ApproxSign)) or isinstance(conv.input_binarizer, Identity):
        return f"input binarizer {type(conv.input_binarizer).__name__} is not a sign"
    if conv.groups != 1 or conv.dilation != (1, 1):
        return "groups/dilation are not supported by the packed kernel"
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return "padding must be explicit zero padding"
    if conv.stride[0] != conv.stride[1] or conv.padding[0] != conv.padding[1]:  # type: ignore[index]
        return "non-square stride/padding"
    return None


@torch.no_grad()
def binary_weight_signs(conv: BinaryConv2d) -> tuple[Tensor, Tensor, int] | str:
    """``(signs, alpha, zeros)`` with the eval forward's weight == alpha[o] · signs[o] (signs ±1), or why not.

    The weight binarizer runs once, exactly as the eval forward runs it (including latent clamping where the
    layer clamps in eval). A latent weight of exactly 0 binarizes to 0 in the float models (``torch.sign``); the
    packed engine reads it as +1 (the rule of :mod:`onebit.kernels.pack`) and ``zeros`` counts such weights.
    """
    wb = conv.binary_weight().detach().float()
    mag = wb.abs()
    alpha = mag.amax(dim=(1, 2, 3))
    a4 = alpha.view(-1, 1, 1, 1)
    off = (mag != 0) & ((mag - a4).abs() > 1e-6 * a4)
    bad = off.flatten(1).any(1)
    if bool(bad.any()):
        return (
            f"weight binarizer output is not ±α per output channel for {int(bad.sum())} of {len(alpha)} channels "
            "(e.g. a progressive binarizer above its temperature threshold)"
        )
    zeros = int(((mag == 0) & (a4 > 0)).sum())
    return torch.where(wb < 0, -1.0, 1.0), alpha, zeros


def _bn_affine(bn: nn.BatchNorm2d | None, c: int) -> tuple[Tensor, Tensor]:
    """(g, h) with bn(y) = g·y + h per channel in eval (float64)."""
    if bn is None:
        return torch.ones(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn}: BatchNorm without running statistics cannot be folded")
    inv = torch.rsqrt(bn.running_var.double() + bn.eps)
    g = inv * (bn.weight.double() if bn.weight is not None else 1.0)
    h = (bn.bias.double() if bn.bias is not None else 0.0) - bn.running_mean.double() * g
    return g, h


def _vec(p: Tensor | None) -> Tensor | None:
    return None if p is None else p.detach().reshape(-1).float().clone()


def _target_device(fn) -> torch.device:
    """The device an ``nn.Module._apply`` function sends tensors to (probed on a float32 CPU scalar)."""
    return fn(torch.zeros(1)).device


def _to(t: Tensor | None, device: torch.device) -> Tensor | None:
    return None if t is None else t.to(device)


def _check_inference(x: Tensor) -> None:
    if torch.is_grad_enabled() and x.requires_grad:
        raise RuntimeError("packed modules are inference-only: run them under torch.no_grad()/inference_mode()")


def _check_input(x: Tensor, channels: int, what: str) -> Tensor:
    """``x`` as the float32 ``[N, channels, H, W]`` a packed module computes on, or the error the float32 layers it
    replaces raise for it (:class:`KernelArgumentError`: a ``RuntimeError`` and a ``ValueError``). Per call, a few
    attribute reads."""
    _check_inference(x)
    shape = x.shape
    if len(shape) != 4 or shape[1] != channels:
        raise KernelArgumentError(
            f"{what} expects input [N, {channels}, H, W], got {tuple(shape)} (expected {channels} channels in a "
            "4-D batch)"
        )
    if x.dtype is not torch.float32:
        if x.is_floating_point() and torch.is_autocast_enabled(x.device.type):
            return x.float()
        raise KernelArgumentError(
            f"{what}: input type ({x.dtype}) and weight type (torch.float32) should be the same (packed modules "
            "compute in float32, as the float32 layers they replace)"
        )
    return x


class PackedConv2d(nn.Module):
    """A binary conv running on packed bits, optionally absorbing an input shift and the per-channel work after it.

    ``y = act_out + PReLU(act_in + BN(α ⊙ (sign(x + shift) ⊛ sign(W)) + b))`` where every part but the conv is
    optional. Output float32 ``[N, O, OH, OW]`` in channels_last memory.
    """

    def __init__(
        self,
        conv: BinaryConv2d,
        *,
        shift: LearnableBias | None = None,
        bn: nn.BatchNorm2d | None = None,
        gain: Tensor | None = None,
        prelu: nn.PReLU | None = None,
        act_in: Tensor | None = None,
        act_out: Tensor | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__()
        why = _not_packable(conv)
        signs = why or binary_weight_signs(conv)
        if isinstance(signs, str):
            raise ValueError(f"cannot pack {conv}: {signs}")
        ws, alpha, zeros = signs
        self.backend = backend
        self.pw: PackedWeight = pack_weight(
            ws,
            conv.stride[0],
            conv.padding[0],
            conv.pad_value,
            int8=backend == "int8",  # type: ignore[index]
        )
        o = conv.out_channels
        g, h = _bn_affine(bn, o)
        if gain is not None:
            g, h = g * gain.detach().reshape(-1).double(), h * gain.detach().reshape(-1).double()
        b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(o, dtype=torch.float64)
        self.epilogue = ConvEpilogue(
            scale=(alpha.double() * g).float(),
            bias=(b * g + h).float() if (bn is not None or conv.bias is not None) else None,
            act_in=act_in,
            slope=None if prelu is None else _vec(prelu.weight),
            act_out=act_out,
        ).checked(o)
        self.shift = None if shift is None else _vec(shift.bias)
        self.desc = (
            f"{conv.in_channels}->{o} k{self.pw.kernel_size[0]} s{self.pw.stride}"
            + (" +shift" if shift is not None else "")
            + (" +bn" if bn is not None else "")
            + (" +gain" if gain is not None else "")
            + (" +prelu" if prelu is not None else "")
            + (f" ({zeros} zero weights read as +1)" if zeros else "")
        )

    def _apply(self, fn, recurse: bool = True):  # type: ignore[override]
        # The packed weight and epilogue are not parameters/buffers (their layout and dtypes are the kernels'
        # contract): only the device follows model.to()/.cuda(); dtype and memory-format changes do not apply.
        super()._apply(fn, recurse)
        dev = _target_device(fn)
        if self.pw.words.device != dev:
            self.pw = self.pw.to(dev)
            self.epilogue = self.epilogue.to(dev).checked(self.pw.out_channels)
            self.shift = _to(self.shift, dev)
        return self

    def forward(self, x: Tensor, xp: Tensor | None = None) -> Tensor:
        """``x`` float ``[N, C, H, W]``; ``xp``: its packed bits (sign(x + shift), border = the padding) when a
        producer already emitted them."""
        x = _check_input(x, self.pw.in_channels, "packed conv")
        if xp is None:
            xp = pack_activations(x, self.shift, self.pw.padding, backend=self.backend)
        y, _, _ = binary_conv(xp, self.pw, tuple(x.shape[2:]), self.epilogue, backend=self.backend)  # type: ignore[arg-type]
        return y  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"{self.desc}, backend={resolve_backend(self.backend, self.pw.words.device)}"


def _set_child(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def pack_(model: nn.Module, cfg: PackConfig | None = None, *, backend: Backend | None = None) -> PackReport:
    """Swap the binary convolutions of an eval-mode ``model`` for packed XOR-popcount modules, in place.

    Args:
        model: a model in eval mode (``model.eval()``); it becomes inference-only. A packed model moves with
            ``model.to(device)``.
        cfg: a :class:`PackConfig` (default: fuse, backend ``"auto"``).
        backend: shorthand for ``PackConfig(backend=...)`` (``pack_(model, backend="torch")``); not together with a
            ``cfg`` that names another backend.

    Returns:
        A :class:`PackReport`.

    Raises:
        RuntimeError: when the model is in training mode.
        ValueError: ``cfg`` is not a :class:`PackConfig`, or ``backend`` contradicts it.
    """
    if cfg is None:
        cfg = PackConfig(backend=backend or "auto")
    elif not isinstance(cfg, PackConfig):
        raise ValueError(f"pack_ takes a PackConfig, got {type(cfg).__name__} (e.g. PackConfig(fuse=False))")
    elif backend is not None and backend != cfg.backend:
        raise ValueError(f"pack_: backend={backend!r} contradicts cfg.backend={cfg.backend!r}")
    backend = None if cfg.backend == "auto" else cfg.backend
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    chosen = resolve_backend(backend, dev)  # validates the name / availability up front
    if model.training:
        raise RuntimeError("pack_ needs a model in eval mode (call model.eval() first): packed modules cannot train")
    report = PackReport(backend={**_native.backend_info(), "backend": chosen})
    with torch.no_grad():
        if cfg.fuse:
            for fuser in FUSERS:
                fuser(model, report, backend)
        for name, m in list(model.named_modules()):
            if isinstance(m, BinaryConv2d):
                try:
                    _set_child(model, name, PackedConv2d(m, backend=backend))
                except ValueError as e:
                    report.float_layers[name] = str(e).split(": ", 1)[-1]
        for name, m in model.named_modules():
            if isinstance(m, PackedConv2d):
                report.packed[name] = m.desc
            elif hasattr(m, "pack_description"):  # fused modules describe themselves
                report.packed[name] = m.pack_description()
    for p in model.parameters():
        p.requires_grad_(False)
    # Float convs with channels_last weights give channels_last (NHWC) outputs: the layout the packed kernels read
    # and write, so no layout copies between the float and the packed parts.
    model.to(memory_format=torch.channels_last)
    if report.float_layers:
        warnings.warn(
            f"pack_: {len(report.float_layers)} binary layer(s) stay in float: "
            + "; ".join(f"{k}: {v}" for k, v in list(report.float_layers.items())[:3]),
            RuntimeWarning,
            stacklevel=2,
        )
    return report
