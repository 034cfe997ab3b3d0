"""Bit layout of packed binary tensors, shared by the packed artefact and the inference engine.

A ±1 tensor is stored one bit per value: bit = 1 for +1 (and for a sign of exactly 0 or of NaN, which the packed
world cannot represent — see :func:`to_bits`), bit = 0 for −1. Bits are packed along one dimension
(``dim``, default the last) into ``uint8`` bytes, **little bit order** (value ``k`` of a byte group lands in
bit ``k % 8`` of byte ``k // 8``), and that dimension is zero-padded to a multiple of 8 bits. The original
length must be kept beside the packed tensor (the artefact stores it as the tensor's shape).

This module is the pure-torch truth; kernels may repack into wider words (e.g. ``uint64`` along channels)
but must round-trip through these two functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pack_bits", "to_bits", "unpack_bits", "packed_length"]

_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def to_bits(x: Tensor) -> Tensor:
    """``not x < 0`` as ``bool``: the bit of sign(x), with sign(0) read as +1 (the packed convention) and NaN read
    as 0 is (+1): the float sign gives 0 for both, which one bit cannot hold."""
    return torch.logical_not(x < 0)


def packed_length(n: int) -> int:
    """Number of bytes holding ``n`` bits."""
    return (int(n) + 7) // 8


def pack_bits(bits: Tensor, dim: int = -1) -> Tensor:
    """Pack a ``bool`` tensor into ``uint8`` along ``dim`` (little bit order, zero padding).

    Args:
        bits: boolean tensor (use :func:`to_bits` on a ±1 or real tensor).
        dim: dimension to pack; its length ``n`` becomes ``ceil(n / 8)``.

    Returns:
        ``uint8`` tensor on the same device.
    """
    if bits.dtype != torch.bool:
        raise TypeError(f"pack_bits expects a bool tensor, got {bits.dtype}; use to_bits(x) first")
    dim = dim % bits.dim()
    b = bits.movedim(dim, -1)
    n = b.shape[-1]
    pad = (-n) % 8
    if pad:
        b = torch.cat([b, b.new_zeros(*b.shape[:-1], pad)], dim=-1)
    b = b.reshape(*b.shape[:-1], b.shape[-1] // 8, 8).to(torch.uint8)  # explicit: -1 is ambiguous for 0 elements
    packed = (b * _WEIGHTS.to(b.device)).sum(dim=-1, dtype=torch.uint8)
    return packed.movedim(-1, dim).contiguous()


def unpack_bits(packed: Tensor, n: int, dim: int = -1) -> Tensor:
    """Inverse of :func:`pack_bits`: the first ``n`` bits along ``dim`` as ``bool``.

    Raises:
        ValueError: when ``packed`` is not ``uint8`` or holds fewer than ``n`` bits along ``dim``.
    """
    if packed.dtype != torch.uint8:
        raise ValueError(f"unpack_bits expects uint8 packed data, got {packed.dtype}")
    dim = dim % packed.dim()
    p = packed.movedim(dim, -1)
    if p.shape[-1] * 8 < n or p.shape[-1] != packed_length(n):
        raise ValueError(f"packed dimension holds {p.shape[-1]} bytes, {packed_length(n)} expected for {n} bits")
    bits = (p.unsqueeze(-1) & _WEIGHTS.to(p.device)) != 0
    bits = bits.reshape(*p.shape[:-1], 8 * p.shape[-1])[..., :n]
    return bits.movedim(-1, dim).contiguous()
