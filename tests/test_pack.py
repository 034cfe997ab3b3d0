import pytest
import torch

from onebit.kernels.pack import pack_bits, packed_length, to_bits, unpack_bits


@pytest.mark.parametrize("shape,dim", [((5, 13), -1), ((3, 8, 2), 1), ((1,), 0), ((4, 64, 3, 3), 1), ((2, 9), 0)])
def test_round_trip(shape, dim):
    g = torch.Generator().manual_seed(0)
    bits = torch.rand(shape, generator=g) > 0.5
    p = pack_bits(bits, dim)
    assert p.dtype == torch.uint8
    assert p.shape[dim] == packed_length(shape[dim])
    assert torch.equal(unpack_bits(p, shape[dim], dim), bits)


def test_little_bit_order_and_zero_padding():
    bits = torch.tensor([True, False, False, False, False, False, False, False, False, True])
    assert pack_bits(bits).tolist() == [1, 2]


def test_sign_zero_is_plus_one_and_errors():
    assert to_bits(torch.tensor([-1.0, 0.0, 2.0])).tolist() == [False, True, True]
    with pytest.raises(TypeError, match="bool"):
        pack_bits(torch.ones(3))
    with pytest.raises(ValueError, match="bytes"):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), 9)


def test_nan_reads_as_zero_does_and_empty_tensors_pack():
    """The packed sign rule: +1 unless negative, so NaN (like 0, which the float sign also maps to 0) is a 1 bit;
    a tensor with no elements packs and unpacks (a batch of 0 through the packed engine)."""
    x = torch.tensor([float("nan"), 0.0, -0.0, -1e-30, float("-inf"), float("inf")])
    assert to_bits(x).tolist() == [True, True, True, False, False, True]
    empty = torch.zeros(0, 3, 13, dtype=torch.bool)
    p = pack_bits(empty)
    assert p.shape == (0, 3, 2) and unpack_bits(p, 13).shape == (0, 3, 13)
