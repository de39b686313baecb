"""Pack ring elements of ``bits`` bits tightly into bytes, so masked codes travel at their width.

A masked code is uniform over the whole ring ``Z_{2**bits}``, so it needs all ``bits`` bits on
the wire — but no more: a 10-bit ring element sent as int16 would waste 6 of 16 bits. numpy's
``packbits`` does the work; this module only lays out the columns.

Example:
    >>> import torch
    >>> x = torch.tensor([0, 1, 1023, 512], dtype=torch.int64)
    >>> packed = pack_bits(x, bits=10)
    >>> packed.numel()  # 4 values x 10 bits = 40 bits = 5 bytes
    5
    >>> unpack_bits(packed, bits=10, count=4).tolist()
    [0, 1, 1023, 512]
"""

from __future__ import annotations

import numpy as np
import torch


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes that ``count`` elements of ``bits`` bits take once packed."""
    return (count * bits + 7) // 8


def pack_bits(values: torch.Tensor, *, bits: int) -> torch.Tensor:
    """``values`` (int64 in ``[0, 2**bits)``, any shape) as a ``uint8`` tensor, big-endian bits."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    words = values.reshape(-1).numpy().astype(">u4")
    columns = np.unpackbits(words.view(np.uint8)).reshape(-1, 32)[:, 32 - bits :]
    return torch.from_numpy(np.packbits(columns.reshape(-1)))


def unpack_bits(packed: torch.Tensor, *, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``count`` int64 ring elements."""
    if packed.numel() != packed_nbytes(count, bits):
        raise ValueError(
            f"{packed.numel()} bytes cannot hold exactly {count} elements of {bits} bits"
        )
    flat = np.unpackbits(packed.numpy())[: count * bits].reshape(count, bits)
    columns = np.zeros((count, 32), dtype=np.uint8)
    columns[:, 32 - bits :] = flat
    words = np.packbits(columns.reshape(-1)).view(">u4")
    return torch.from_numpy(words.astype(np.int64))
