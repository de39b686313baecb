"""Bit packing of masked ring elements: exact round trips and exact sizes."""

from __future__ import annotations

import pytest
import torch

from ddla.aggregate.bits import pack_bits, packed_nbytes, unpack_bits


@pytest.mark.parametrize("bits", [1, 3, 6, 8, 10, 11, 14, 16, 31, 32])
def test_round_trip_every_width(bits):
    g = torch.Generator().manual_seed(bits)
    count = 1001
    x = torch.randint(0, 2**bits, (count,), generator=g, dtype=torch.int64)
    packed = pack_bits(x, bits=bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == packed_nbytes(count, bits) == (count * bits + 7) // 8
    assert torch.equal(unpack_bits(packed, bits=bits, count=count), x)


def test_wrong_sizes_are_refused():
    with pytest.raises(ValueError, match="cannot hold exactly"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), bits=10, count=4)
    with pytest.raises(ValueError, match="bits must be"):
        pack_bits(torch.zeros(2, dtype=torch.int64), bits=33)
