"""``int8``: blockwise absmax 8-bit quantization — 1 byte per value + 4 bytes per block.

Spec ``int8`` (block 128) or ``int8:BLOCK``. Bound: ``|x - x_hat| <= absmax(block) / 254``.
"""

from __future__ import annotations

from ddla.compress.blockwise import BlockwiseInt8


class Int8(BlockwiseInt8):
    """8-bit blockwise quantization.

    Example:
        >>> import torch
        >>> Int8().compress(torch.randn(256)).nbytes  # 256 codes + 2 scales
        264
    """

    name = "int8"
    bits = 8
