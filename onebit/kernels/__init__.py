"""Bit packing and the packed (XNOR/XOR-popcount) inference engine.

* :mod:`onebit.kernels.pack` — the shared 1-bit layout (artefacts and kernels);
* :mod:`onebit.kernels.ops` — packed ops (sign + pack, packed weights, popcount conv with fused epilogue), compiled
  kernel and pure-torch reference;
* :mod:`onebit.kernels.engine` — :func:`pack_` swaps a model's binary convolutions for packed modules
  (:class:`PackConfig`);
* :mod:`onebit.kernels.fuse`, :mod:`onebit.kernels.fuse_resnet` — fused packed modules of known blocks (ReActNet-A,
  BNext; Bi-Real), registered as fusers of :func:`pack_`;
* :func:`backend_info` — which kernel runs (ISA, OpenMP) or why the pure-torch path is used;
* :class:`KernelArgumentError` — what a packed model raises for an input it cannot take (see the contract in
  :mod:`onebit.kernels.engine`).
"""

from onebit.kernels import fuse, fuse_resnet  # noqa: F401  (register the model fusers of pack_)
from onebit.kernels._native import KernelArgumentError, backend_info, select_isa
from onebit.kernels.batch import BatchRunner
from onebit.kernels.engine import PackConfig, PackedConv2d, PackReport, pack_
from onebit.kernels.fuse import FusedReActBlock
from onebit.kernels.pack import pack_bits, packed_length, to_bits, unpack_bits

__all__ = [
    "BatchRunner",
    "FusedReActBlock",
    "KernelArgumentError",
    "PackConfig",
    "PackReport",
    "PackedConv2d",
    "backend_info",
    "pack_",
    "pack_bits",
    "packed_length",
    "select_isa",
    "to_bits",
    "unpack_bits",
]
