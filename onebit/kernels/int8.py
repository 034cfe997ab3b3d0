"""The ``"int8"`` backend of the packed engine: binary convolution as an exact int8 GEMM (``torch._int_mm``).

On CUDA ``torch._int_mm`` runs on the int8 tensor cores (int8 x int8 -> int32); it also runs on CPU, which is how
CI checks this path for exactness. Instead of 64-bit words, the "packed" activations of this backend are int8 ±1
values in NHWC ``[N, H + 2p, W + 2p, C]`` with a border of 0 entries: a padded tap then contributes exactly 0, so
zero padding needs no correction term. ±1 padding (``pad_value``) fills the border with that value before the GEMM.

The dot products are integers (|dot| <= KH·KW·C fits int32 for any real layer), so the result equals the
XOR-popcount reference exactly; the float32 epilogue is the reference's own code (:func:`ops._epilogue_torch`).

``torch._int_mm`` on CUDA needs ``M > 16`` rows and ``K``, ``N`` multiples of 8: the weight matrix is padded with
zero rows/columns once at pack time, the im2col matrix with zero columns (and zero rows for tiny inputs) per call;
zero entries add 0 to every dot product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["available", "conv_int8", "pack_int8", "sign_int8", "weight_matrix"]


def available() -> bool:
    """Whether this torch has ``torch._int_mm`` (torch >= 2.2)."""
    return hasattr(torch, "_int_mm")


def _up8(v: int) -> int:
    return (v + 7) // 8 * 8


def sign_int8(t: Tensor) -> Tensor:
    """``not t < 0`` as int8 ±1 (the packed rule of :func:`onebit.kernels.pack.to_bits`: 0 and NaN -> +1)."""
    return torch.where(t < 0, -1, 1).to(torch.int8)


def pack_int8(v: Tensor, pad: int) -> Tensor:
    """NHWC float ``v`` -> int8 ±1 ``[N, H + 2 pad, W + 2 pad, C]`` with a 0 border, contiguous."""
    s = sign_int8(v)
    return F.pad(s, (0, 0, pad, pad, pad, pad)).contiguous() if pad else s.contiguous()


def weight_matrix(signs: Tensor) -> Tensor:
    """±1 weight ``[O, C, KH, KW]`` (float, ``>= 0`` -> +1) -> int8 ``[O8, K8]``: rows ordered (KH, KW, C) like the
    im2col columns, zero-padded to multiples of 8 (``_int_mm`` on CUDA needs them)."""
    o, c, kh, kw = signs.shape
    k = kh * kw * c
    m = sign_int8(signs.detach().float().permute(0, 2, 3, 1).reshape(o, k))
    return F.pad(m, (0, _up8(k) - k, 0, _up8(o) - o)).contiguous()


def conv_int8(xp: Tensor, w8: Tensor, out_channels: int, kernel_size: tuple[int, int], stride: int) -> Tensor:
    """Integer dot products ``int32 [N, OH, OW, O]`` of int8 ±1/0 input ``[N, Hp, Wp, C]`` (border included) with
    the weight matrix of :func:`weight_matrix`.

    Args:
        xp: int8 NHWC input with its padding already in place.
        w8: int8 ``[O8, K8]`` on the same device.
        out_channels: ``O`` (the rows of ``w8`` past it are zero padding).
        kernel_size: ``(KH, KW)``.
        stride: square stride.
    """
    kh, kw = kernel_size
    n, hp, wp, c = xp.shape
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    if kh == 1 and kw == 1:
        cols = xp[:, ::stride, ::stride] if stride > 1 else xp
        cols = cols.reshape(n * oh * ow, c)  # a view when stride is 1
    else:
        cols = xp.unfold(1, kh, stride).unfold(2, kw, stride)[:, :oh, :ow]  # [N, OH, OW, C, KH, KW]
        cols = cols.permute(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, kh * kw * c)
    p, k = cols.shape
    k8 = w8.shape[1]
    if k8 != _up8(k):
        raise ValueError(f"int8 weight matrix has {k8} columns for an im2col width of {k} (expected {_up8(k)})")
    rows = max(p, 17)  # CUDA _int_mm needs more than 16 rows
    if k8 != k or rows != p:
        cols = F.pad(cols, (0, k8 - k, 0, rows - p))
    dot = torch._int_mm(cols.contiguous(), w8.t())  # [rows, O8] int32, exact
    return dot[:p, :out_channels].reshape(n, oh, ow, out_channels)
