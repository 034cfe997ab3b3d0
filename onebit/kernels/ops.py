"""Packed binary ops: sign + pack of activations, packed weights, XOR-popcount convolution with a fused epilogue.

Every op has two implementations that give identical results: the compiled kernel (``csrc/*.c`` through
:mod:`onebit.kernels._native`) and a pure-torch reference that computes the same thing with exact integer
arithmetic (XOR of int64 words, SWAR popcount) and the same float32 epilogue, operation by operation. The reference
runs when no compiled kernel loads, when ``ONEBIT_KERNELS=torch`` is set, or when ``backend="torch"`` is asked for.
A third backend, ``"int8"`` (:mod:`onebit.kernels.int8`), computes the same integers as an int8 GEMM
(``torch._int_mm``: int8 tensor cores on CUDA, also runs on CPU) with the reference's epilogue code; ``"auto"``
picks it for CUDA tensors. Its packed activations are int8 ±1 NHWC with a 0 border instead of 64-bit words.

Layout: activations are NHWC ``int64`` words ``[N, H + 2p, W + 2p, ceil(C / 64)]`` — the bytes of
:func:`onebit.kernels.pack.pack_bits` along channels (little bit order, sign(0) -> +1, zero pad bits), padded to
whole 64-bit words (little-endian), with an all-zero spatial border of the consumer conv's padding ``p``.

Exactness. For ±1 vectors of n values, dot = n − 2·popcount(x XOR w). A zero border word reads as n values of −1,
so a padded tap contributes −Σw_tap; adding ``(1 + pad_value)·Σw_tap`` for each padded tap gives exact zero padding
(``pad_value = 0``, the official models) or ±1 padding. The packed world has no 0: an input of exactly 0 after the
shift binarizes to +1, while the float models' ``torch.sign`` gives 0 there (see :mod:`onebit.binarize`); a NaN
binarizes as 0 does (+1: the float sign also gives NaN the value of 0). Everything after the popcount is float32
and carries NaN/inf as the float model does.

Argument checks. Each op checks its tensors where they meet the compiled kernel — dtype, device, contiguity (a
non-contiguous packed input is copied), shapes consistent with the dims passed, an output of at least one pixel —
and raises :class:`~onebit.kernels._native.KernelArgumentError` (a ``ValueError`` and a ``RuntimeError``, like the
errors of ``F.conv2d`` for the same input) before any call; call-invariant tensors (packed weights, epilogue vectors)
are checked once, when their kernel-argument template is built. The kernels check their own arguments too.
"""

from __future__ import annotations

import ctypes
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from onebit.kernels import _native
from onebit.kernels import int8 as _int8
from onebit.kernels.pack import pack_bits, to_bits, unpack_bits

__all__ = [
    "ConvEpilogue",
    "PackedWeight",
    "binary_conv",
    "conv_out_size",
    "pack_activations",
    "pack_weight",
    "popcount64",
    "resolve_backend",
]

_M1, _M2, _M4, _H01 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x0101010101010101


BACKENDS = ("auto", "native", "torch", "int8")


def resolve_backend(backend: str | None, device: torch.device | str | None = None) -> str:
    """The backend that runs for ``backend`` on tensors of ``device``.

    ``"auto"`` picks ``"int8"`` (int8 tensor-core GEMM) for CUDA tensors, and on CPU ``"native"`` when the compiled
    kernel is loaded and not refused, else ``"torch"``.

    Args:
        backend: ``None``/``"auto"``, ``"native"`` (compiled CPU kernel; error if unavailable or on a non-CPU
            device), ``"torch"`` (pure-torch XOR-popcount reference) or ``"int8"`` (``torch._int_mm``, CPU or CUDA).
        device: device of the tensors the op runs on; ``None`` means CPU (the decision of the CPU-only API).
    """
    dev = torch.device("cpu" if device is None else device)
    if backend in (None, "auto"):
        if dev.type == "cuda" and _int8.available():
            return "int8"
        return "native" if dev.type == "cpu" and _native.load() is not None else "torch"
    if backend == "torch":
        return "torch"
    if backend == "int8":
        if not _int8.available():
            raise RuntimeError(f"backend='int8' needs torch._int_mm (torch >= 2.2), not in torch {torch.__version__}")
        return "int8"
    if backend == "native":
        if dev.type != "cpu":
            raise RuntimeError(f"backend='native' is a CPU kernel; tensors are on {dev} (use 'int8' or 'auto')")
        if _native.load() is None:
            raise RuntimeError(f"backend='native' asked for but {_native.backend_info()['reason']}")
        return "native"
    raise ValueError(f"backend must be 'auto', 'native', 'torch' or 'int8', got {backend!r}")


def popcount64(v: Tensor) -> Tensor:
    """Bit count of each ``int64`` element (SWAR; arithmetic shifts are masked so negative words count right)."""
    v = v - ((v >> 1) & _M1)
    v = (v & _M2) + ((v >> 2) & _M2)
    v = (v + (v >> 4)) & _M4
    return ((v * _H01) >> 56) & 0xFF


def _bits_to_words(bits: Tensor) -> Tensor:
    """``bool [..., C]`` -> ``int64 [..., ceil(C / 64)]`` through :func:`pack_bits` (the shared byte layout)."""
    b = pack_bits(bits, dim=-1)
    pad = (-b.shape[-1]) % 8
    if pad:
        b = F.pad(b, (0, pad))
    return b.contiguous().view(torch.int64)


def _words(c: int) -> int:
    return (c + 63) // 64


def _nhwc(x: Tensor) -> Tensor:
    """A float32 NCHW tensor as a contiguous NHWC one (free for a channels_last input)."""
    return x.permute(0, 2, 3, 1).contiguous()


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


_Err = _native.KernelArgumentError


def _require_cpu(t: Tensor | None, dtype: torch.dtype, numel: int | None, what: str) -> None:
    """``t`` (unless ``None``) is a contiguous CPU tensor of ``dtype`` with ``numel`` elements (when given): what a
    raw pointer handed to the compiled kernel must be."""
    if t is None:
        return
    wrong_size = numel is not None and t.numel() != numel
    if t.device.type != "cpu" or t.dtype != dtype or not t.is_contiguous() or wrong_size:
        raise _Err(
            f"{what}: the native kernel needs a contiguous CPU {dtype} tensor"
            + (f" of {numel} elements" if numel is not None else "")
            + f", got {t.dtype} {tuple(t.shape)} on {t.device}"
            + ("" if t.is_contiguous() else " (not contiguous)")
        )


def conv_out_size(h: int, w: int, kernel_size: tuple[int, int], stride: int, padding: int) -> tuple[int, int]:
    """``(OH, OW)`` of a conv; raises like ``F.conv2d`` when the padded input is smaller than the kernel."""
    kh, kw = kernel_size
    if h < 1 or w < 1 or h + 2 * padding < kh or w + 2 * padding < kw:
        raise _Err(
            f"input {h}x{w} (padded {h + 2 * padding}x{w + 2 * padding}) is smaller than the kernel {kh}x{kw}: "
            "kernel size can't be greater than actual input size"
        )
    return (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1


def pack_activations(x: Tensor, shift: Tensor | None = None, pad: int = 0, backend: str | None = None) -> Tensor:
    """Bits of ``not x + shift < 0`` (``x`` float32 NCHW, any memory format) as NHWC words with a zero border ``pad``.

    Args:
        x: activations ``[N, C, H, W]``.
        shift: per-channel ``[C]`` added before the sign (a ReActNet/BNext ``LearnableBias``), or ``None``.
        pad: spatial border (the padding of the conv that consumes the result).
        backend: see :func:`resolve_backend`.

    Returns:
        ``int64 [N, H + 2 pad, W + 2 pad, ceil(C / 64)]``; with the ``"int8"`` backend int8 ±1
        ``[N, H + 2 pad, W + 2 pad, C]`` with a border of 0 (see :mod:`onebit.kernels.int8`).
    """
    if x.dim() != 4 or x.dtype != torch.float32:
        raise _Err(f"pack_activations expects a float32 [N, C, H, W] tensor, got {x.dtype} {tuple(x.shape)}")
    n, c, h, w = x.shape
    if shift is not None and shift.numel() != c:
        raise _Err(f"shift has {shift.numel()} values for {c} channels")
    if pad < 0 or c < 1:
        raise _Err(f"pack_activations: padding {pad} must be >= 0 and channels {c} >= 1")
    be = resolve_backend(backend, x.device)
    if be == "native":
        xs = _nhwc(x)
        t = None if shift is None else shift.detach().reshape(-1).float().contiguous()
        _require_cpu(t, torch.float32, c, "pack_activations shift")
        out = torch.zeros(n, h + 2 * pad, w + 2 * pad, _words(c), dtype=torch.int64)
        rc = _native.load().ob_pack_nhwc(  # type: ignore[union-attr]
            xs.data_ptr(), _ptr(t), n, h, w, c, pad, pad, _words(c), out.data_ptr(), torch.get_num_threads()
        )
        _native.check(rc, "ob_pack_nhwc")
        return out
    v = x if shift is None else x + shift.detach().reshape(1, c, 1, 1).float()
    if be == "int8":
        return _int8.pack_int8(v.permute(0, 2, 3, 1), pad)
    words = _bits_to_words(to_bits(v.permute(0, 2, 3, 1)))
    return F.pad(words, (0, 0, pad, pad, pad, pad)) if pad else words.contiguous()


@dataclass
class PackedWeight:
    """A ±1 weight ``[O, C, KH, KW]`` packed for :func:`binary_conv`, with its conv geometry.

    Attributes:
        words: ``int64 [O, KH, KW, K]`` (reference layout).
        wq: ``int64 [ceil(O / 8), KH, KW * K, 8]`` (kernel layout: blocks of 8 output channels).
        corr: ``int32 [KH * KW, O]`` = (1 + pad_value) · Σ w over each tap, or ``None`` without padding.
        w8: int8 ±1 ``[ceil8(O), ceil8(KH * KW * C)]`` (the ``"int8"`` backend's GEMM operand, zero-padded), or
            ``None`` until :meth:`int8_matrix` builds it.
        pad_value: value of the padded input taps (0, -1 or +1).
    """

    words: Tensor
    wq: Tensor
    corr: Tensor | None
    out_channels: int
    in_channels: int
    kernel_size: tuple[int, int]
    stride: int
    padding: int
    w8: Tensor | None = None
    pad_value: float = 0.0

    def __getstate__(self) -> dict:
        # the cached kernel arguments (_args_template) hold raw pointers into these tensors: a copy (deepcopy,
        # pickle) builds its own
        return {k: v for k, v in self.__dict__.items() if k != "_templates"}

    def to(self, device: torch.device | str) -> PackedWeight:
        """A copy on ``device`` (dtypes and contiguity kept; the native kernel runs on CPU copies only)."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            if isinstance(getattr(self, f.name), Tensor)
            else getattr(self, f.name)
            for f in dataclasses.fields(self)
        }
        return PackedWeight(**moved)

    def signs(self) -> Tensor:
        """The ±1 float weight ``[O, C, KH, KW]`` back from ``words`` (on their device)."""
        b = self.words.contiguous().view(torch.uint8)  # [O, KH, KW, 8K]
        bits = unpack_bits(b[..., : (self.in_channels + 7) // 8].contiguous(), self.in_channels, dim=-1)
        return torch.where(bits, 1.0, -1.0).permute(0, 3, 1, 2).contiguous()

    def int8_matrix(self) -> Tensor:
        """``w8``, built from ``words`` on their device at first use when :func:`pack_weight` did not build it
        (the CPU kernels never need it: 8 bits per weight would be most of a packed model's memory)."""
        if self.w8 is None:
            if not _int8.available():
                raise RuntimeError(f"the int8 backend needs torch._int_mm, not in torch {torch.__version__}")
            self.w8 = _int8.weight_matrix(self.signs())
        return self.w8

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """``(OH, OW)`` for an unpadded ``h x w`` input; raises :class:`KernelArgumentError` (a ``RuntimeError``, as
        ``F.conv2d``) when the padded input is smaller than the kernel."""
        return conv_out_size(h, w, self.kernel_size, self.stride, self.padding)


def pack_weight(
    sign_w: Tensor, stride: int = 1, padding: int = 0, pad_value: float = 0.0, *, int8: bool = False
) -> PackedWeight:
    """Pack a weight whose signs are used (``w >= 0`` -> +1) for a conv with the given geometry.

    Args:
        sign_w: ``[O, C, KH, KW]``; only the sign is read (scale factors go into the epilogue).
        stride, padding: square stride and padding of the conv.
        pad_value: value of the padded input taps: 0 (official zero padding), -1 or +1.
        int8: also build the ``"int8"`` backend's matrix now (else :meth:`PackedWeight.int8_matrix` builds it at
            first use).
    """
    if sign_w.dim() != 4:
        raise ValueError(f"pack_weight expects [O, C, KH, KW], got {tuple(sign_w.shape)}")
    if pad_value not in (-1.0, 0.0, 1.0):
        raise ValueError(f"pad_value must be -1, 0 or +1 for a binary input, got {pad_value}")
    device = sign_w.device
    sign_w = sign_w.detach().float().cpu()  # packed on CPU, then moved whole: one device for every field
    o, c, kh, kw = sign_w.shape
    bits = to_bits(sign_w.permute(0, 2, 3, 1))  # [O, KH, KW, C]
    words = _bits_to_words(bits)  # [O, KH, KW, K]
    k = words.shape[-1]
    o8 = (o + 7) // 8
    wq = torch.zeros(o8 * 8, kh, kw * k, dtype=torch.int64)
    wq[:o] = words.reshape(o, kh, kw * k)
    wq = wq.reshape(o8, 8, kh, kw * k).permute(0, 2, 3, 1).contiguous()
    corr = None
    if padding:
        tap_sum = (2 * bits.to(torch.int32).sum(-1) - c).reshape(o, kh * kw)  # Σ ±1 over the channels of each tap
        corr = (tap_sum * int(1 + pad_value)).t().to(torch.int32).contiguous()
    pw = PackedWeight(
        words=words.contiguous(),
        wq=wq,
        corr=corr,
        out_channels=o,
        in_channels=c,
        kernel_size=(kh, kw),
        stride=int(stride),
        padding=int(padding),
        w8=_int8.weight_matrix(sign_w) if int8 and _int8.available() else None,
        pad_value=float(pad_value),
    )
    return pw if device.type == "cpu" else pw.to(device)


@dataclass
class ConvEpilogue:
    """Per-output-channel float32 work after the popcount, in this order (each part optional but ``scale``):

    ``y = dot·scale + bias + res[..., o % res_c]``; ``y = PReLU(y + act_in; slope) + act_out``; float output ``y``
    and/or the packed bits of ``y + thresh >= 0`` (the next binary conv's input, with border ``bits_pad``).
    """

    scale: Tensor
    bias: Tensor | None = None
    act_in: Tensor | None = None
    slope: Tensor | None = None
    act_out: Tensor | None = None
    thresh: Tensor | None = None

    def __setattr__(self, name: str, value) -> None:
        # a changed field must be validated again before it reaches the kernel
        if name != "_checked_for":
            object.__setattr__(self, "_checked_for", None)
        object.__setattr__(self, name, value)

    @staticmethod
    def _vec(t: Tensor | None, o: int, name: str) -> Tensor | None:
        if t is None:
            return None
        t = t.detach().reshape(-1).to(torch.float32).contiguous()
        if t.numel() != o:
            raise ValueError(f"epilogue {name} has {t.numel()} values for {o} output channels")
        return t

    def to(self, device: torch.device | str) -> ConvEpilogue:
        """A copy with every vector on ``device`` (float32 kept), not yet checked."""
        return ConvEpilogue(
            **{f.name: None if (t := getattr(self, f.name)) is None else t.to(device) for f in dataclasses.fields(self)}
        )

    def checked(self, o: int) -> ConvEpilogue:
        """A copy with every vector flat float32 of length ``o`` (a PReLU with one shared slope is expanded); the
        epilogue itself when it is already one (checked epilogues are reused on every call)."""
        if getattr(self, "_checked_for", None) == o:
            return self
        slope = self.slope
        if slope is not None and slope.numel() == 1:
            slope = slope.detach().reshape(1).expand(o)
        ep = ConvEpilogue(
            scale=self._vec(self.scale, o, "scale"),  # type: ignore[arg-type]
            bias=self._vec(self.bias, o, "bias"),
            act_in=self._vec(self.act_in, o, "act_in"),
            slope=self._vec(slope, o, "slope"),
            act_out=self._vec(self.act_out, o, "act_out"),
            thresh=self._vec(self.thresh, o, "thresh"),
        )
        ep._checked_for = o  # type: ignore[attr-defined]
        return ep


def _conv_torch(xp: Tensor, pw: PackedWeight, h: int, w: int) -> Tensor:
    """Reference integer dot products ``int32 [N, OH, OW, O]`` from padded packed input ``[N, Hp, Wp, K]``."""
    kh, kw = pw.kernel_size
    s = pw.stride
    n = xp.shape[0]
    oh, ow = pw.out_size(h, w)
    cols = xp.unfold(1, kh, s).unfold(2, kw, s)[:, :oh, :ow]  # [N, OH, OW, K, KH, KW]
    cols = cols.permute(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, kh * kw * xp.shape[3])  # [P, KH*KW*K] (n may be 0)
    wm = pw.words.reshape(pw.out_channels, -1)  # [O, L]
    rows = max(1, (1 << 22) // max(1, wm.numel()))
    counts = torch.empty(cols.shape[0], pw.out_channels, dtype=torch.int64, device=xp.device)
    for r0 in range(0, cols.shape[0], rows):
        counts[r0 : r0 + rows] = popcount64(cols[r0 : r0 + rows, None, :] ^ wm[None]).sum(-1)
    dot = kh * kw * pw.in_channels - 2 * counts
    if pw.corr is not None:
        dev = xp.device
        iy = torch.arange(oh, device=dev) * s - pw.padding
        ix = torch.arange(ow, device=dev) * s - pw.padding
        ty = iy[:, None] + torch.arange(kh, device=dev)[None]  # [OH, KH]
        tx = ix[:, None] + torch.arange(kw, device=dev)[None]  # [OW, KW]
        out_y = (ty < 0) | (ty >= h)
        out_x = (tx < 0) | (tx >= w)
        padded = (out_y[:, None, :, None] | out_x[None, :, None, :]).reshape(oh * ow, kh * kw)  # [OH*OW, T]
        fix = padded.to(torch.int64) @ pw.corr.to(torch.int64)  # [OH*OW, O]
        dot = dot.reshape(n, oh * ow, pw.out_channels) + fix[None]
    return dot.reshape(n, oh, ow, pw.out_channels).to(torch.int32)


def _conv_int8(xp: Tensor, pw: PackedWeight) -> Tensor:
    """``int32 [N, OH, OW, O]`` through the int8 GEMM; the 0 border of ``xp`` is exact zero padding, a ±1
    ``pad_value`` is written into the border first."""
    w8 = pw.int8_matrix()
    if w8.device != xp.device:
        raise ValueError(f"packed weight on {w8.device}, input on {xp.device}: move the module (model.to(device))")
    p = pw.padding
    if p and pw.pad_value != 0.0:
        xp = xp.clone()
        fill = int(pw.pad_value)
        xp[:, :p], xp[:, -p:], xp[:, :, :p], xp[:, :, -p:] = fill, fill, fill, fill
    return _int8.conv_int8(xp, w8, pw.out_channels, pw.kernel_size, pw.stride)


def _epilogue_torch(dot: Tensor, ep: ConvEpilogue, res: Tensor | None) -> Tensor:
    """The float32 epilogue on ``dot [N, OH, OW, O]``, in the kernel's operation order."""
    v = dot.to(torch.float32) * ep.scale
    if ep.bias is not None:
        v = v + ep.bias
    if res is not None:
        o, rc = dot.shape[-1], res.shape[-1]
        v = v + (res if rc == o else res[..., torch.arange(o, device=res.device) % rc])
    if ep.act_in is not None:
        v = v + ep.act_in
    if ep.slope is not None:
        v = torch.where(v > 0, v, v * ep.slope)
    if ep.act_out is not None:
        v = v + ep.act_out
    return v


def _args_template(pw: PackedWeight, ep: ConvEpilogue) -> _native.ConvArgs:
    """The call-invariant fields of the kernel arguments (weights, geometry, epilogue vectors), cached per pair: the
    per-call Python work is then a copy and the few pointers that change. Holds references to what it points at."""
    cache = pw.__dict__.setdefault("_templates", {})
    hit = cache.get(id(ep))
    if hit is not None and hit[0] is ep:
        return hit[1]
    kh, kw = pw.kernel_size
    o, k = pw.out_channels, _words(pw.in_channels)
    # what the template points at, checked once: the kernel reads these by raw pointer on every call
    _require_cpu(pw.wq, torch.int64, (o + 7) // 8 * 8 * kh * kw * k, "packed weight (wq)")
    _require_cpu(pw.corr, torch.int32, kh * kw * o, "padding correction (corr)")
    for name in ("scale", "bias", "act_in", "slope", "act_out", "thresh"):
        _require_cpu(getattr(ep, name), torch.float32, o, f"epilogue {name}")
    if ep.scale is None:
        raise _Err("epilogue scale is required")
    t = _native.ConvArgs(
        wq=pw.wq.data_ptr(), k=_words(pw.in_channels),
        o=pw.out_channels, kh=kh, kw=kw, c=pw.in_channels, stride=pw.stride, pad=pw.padding, corr=_ptr(pw.corr),
        scale=ep.scale.data_ptr(), bias=_ptr(ep.bias), act_in=_ptr(ep.act_in), slope=_ptr(ep.slope),
        act_out=_ptr(ep.act_out), thresh=_ptr(ep.thresh), bk=_words(pw.out_channels),
    )  # fmt: skip
    if len(cache) > 64:
        cache.clear()
    cache[id(ep)] = (ep, t)
    return t


def binary_conv(
    xp: Tensor,
    pw: PackedWeight,
    in_size: tuple[int, int],
    epilogue: ConvEpilogue | None = None,
    *,
    residual: Tensor | None = None,
    want_float: bool = True,
    bits_pad: int | None = None,
    want_int: bool = False,
    backend: str | None = None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """XOR-popcount convolution of packed input with packed weights, and the fused epilogue.

    Args:
        xp: packed input from :func:`pack_activations` with border ``pw.padding``.
        pw: packed weight.
        in_size: unpadded input ``(H, W)``.
        epilogue: per-channel float work (default: ``scale = 1``, giving the integer dot products as floats).
        residual: float32 ``[N, res_c, OH, OW]`` added after the affine part, channel ``o % res_c`` (a block
            doubling its width adds the same residual to both halves).
        want_float: return the float output.
        bits_pad: also return the packed bits of the output (``y + thresh >= 0``) with this border.
        want_int: also return the integer dot products ``int32 [N, OH, OW, O]``.
        backend: see :func:`resolve_backend`.

    Returns:
        ``(y, bits, dot)``: ``y`` float32 ``[N, O, OH, OW]`` (a channels_last view of NHWC memory) or ``None``;
        ``bits`` ``int64 [N, OH + 2 bits_pad, OW + 2 bits_pad, ceil(O / 64)]`` or ``None``; ``dot`` or ``None``.
    """
    h, w = in_size
    if xp.dim() != 4:
        raise _Err(f"packed input must be [N, Hp, Wp, K], got {tuple(xp.shape)}")
    n, hp, wp, k = xp.shape
    o = pw.out_channels
    be = resolve_backend(backend, xp.device)
    want_dtype, k_expected = (torch.int8, pw.in_channels) if be == "int8" else (torch.int64, _words(pw.in_channels))
    if xp.dtype != want_dtype:
        raise _Err(
            f"backend {be!r} expects packed input of dtype {want_dtype} (from pack_activations with the same "
            f"backend), got {xp.dtype}"
        )
    if k != k_expected or hp != h + 2 * pw.padding or wp != w + 2 * pw.padding:
        raise _Err(
            f"packed input {tuple(xp.shape)} does not fit a conv over {pw.in_channels} channels at {h}x{w} with "
            f"padding {pw.padding}"
        )
    if bits_pad is not None and bits_pad < 0:
        raise _Err(f"bits_pad must be >= 0, got {bits_pad}")
    ep = (epilogue or ConvEpilogue(scale=torch.ones(o, device=xp.device))).checked(o)
    oh, ow = pw.out_size(h, w)
    res = None
    if residual is not None:
        if (
            residual.dim() != 4
            or residual.shape[0] != n
            or tuple(residual.shape[2:]) != (oh, ow)
            or residual.shape[1] < 1
            or o % residual.shape[1]
        ):
            raise _Err(f"residual {tuple(residual.shape)} does not fit the output [{n}, {o}, {oh}, {ow}]")
        if residual.device != xp.device:
            raise _Err(f"residual on {residual.device}, packed input on {xp.device}")
        res = residual.permute(0, 2, 3, 1)
        if res.dtype != torch.float32 or not res.is_contiguous():
            res = res.float().contiguous()
    if be == "native":
        if not xp.is_contiguous():  # e.g. a slice: the kernel reads [N, Hp, Wp, K] row-major
            xp = xp.contiguous()
        out_f = torch.empty(n, oh, ow, o, dtype=torch.float32) if want_float else None
        bits = None
        if bits_pad is not None:
            bits = torch.zeros(n, oh + 2 * bits_pad, ow + 2 * bits_pad, _words(o), dtype=torch.int64)
        out_int = torch.empty(n, oh, ow, o, dtype=torch.int32) if want_int else None
        a = _native.ConvArgs.from_buffer_copy(_args_template(pw, ep))
        a.x, a.n, a.hp, a.wp, a.h, a.w, a.oh, a.ow = xp.data_ptr(), n, hp, wp, h, w, oh, ow
        a.out_int, a.out_f, a.out_bits = _ptr(out_int), _ptr(out_f), _ptr(bits)
        if res is not None:
            a.res, a.res_c = res.data_ptr(), res.shape[-1]
        if bits_pad:
            a.bph = a.bpw = bits_pad
        a.nthreads = torch.get_num_threads()
        _native.check(_native.load().ob_conv(ctypes.byref(a)), "ob_conv")  # type: ignore[union-attr]
    else:
        if be == "int8":
            dot = _conv_int8(xp, pw)
        else:
            dot = _conv_torch(xp.contiguous(), pw, h, w)
        out_int = dot if want_int else None
        out_f, bits = None, None
        if want_float or bits_pad is not None:
            v = _epilogue_torch(dot, ep, res)
            out_f = v if want_float else None
            if bits_pad is not None:
                t = v if ep.thresh is None else v + ep.thresh
                if be == "int8":
                    bits = _int8.pack_int8(t, bits_pad)
                else:
                    words = _bits_to_words(to_bits(t))
                    bits = F.pad(words, (0, 0, bits_pad, bits_pad, bits_pad, bits_pad)) if bits_pad else words
    y = out_f.permute(0, 3, 1, 2) if out_f is not None else None
    return y, bits, out_int
