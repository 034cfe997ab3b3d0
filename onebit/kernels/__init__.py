"""Bit packing and the packed (XNOR/XOR-popcount) inference engine."""

from onebit.kernels.pack import pack_bits, packed_length, to_bits, unpack_bits

__all__ = ["pack_bits", "packed_length", "to_bits", "unpack_bits"]
