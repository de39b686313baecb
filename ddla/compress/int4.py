"""``int4``: blockwise absmax 4-bit quantization, two codes packed per byte.

Spec ``int4`` (block 128) or ``int4:BLOCK``. Codes are in ``[-7, 7]`` and travel as nibbles
``code + 8``; ``ceil(n / 2)`` bytes + 4 bytes per block. Bound: ``|x - x_hat| <= absmax / 14``.
"""

from __future__ import annotations

import torch

from ddla.compress.base import Payload
from ddla.compress.blockwise import BlockwiseInt8


class Int4(BlockwiseInt8):
    """4-bit blockwise quantization with packed nibbles.

    Example:
        >>> import torch
        >>> Int4().compress(torch.randn(256)).nbytes  # 128 packed bytes + 2 scales
        136
    """

    name = "int4"
    bits = 4

    def compress(self, tensor: torch.Tensor, *, key: str = "0") -> Payload:
        codes, scales, n = self._quantize(tensor)
        nibbles = (codes.to(torch.int16) + 8).to(torch.uint8)
        if n % 2:
            nibbles = torch.cat([nibbles, torch.zeros(1, dtype=torch.uint8)])
        packed = nibbles[0::2] | (nibbles[1::2] << 4)
        return Payload(
            {"codes": packed, "scales": scales}, tuple(tensor.shape), tensor.dtype, {"n": n}
        )

    def decompress(self, payload: Payload) -> torch.Tensor:
        packed, scales = payload.tensors["codes"], payload.tensors["scales"]
        assert isinstance(packed, torch.Tensor) and isinstance(scales, torch.Tensor)
        n = int(payload.meta["n"])
        nibbles = torch.stack([packed & 0x0F, packed >> 4], dim=1).view(-1)[:n]
        codes = nibbles.to(torch.int16) - 8
        out = self._dequantize(codes, scales, n)
        return out.to(payload.dtype).view(payload.shape)
