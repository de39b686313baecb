"""bfloat16 on the wire: 2 bytes per value, fp32's range with an 8-bit mantissa; summable."""

from __future__ import annotations

import torch

from ddla.compress.fp16 import FP16


class BF16(FP16):
    """Cast to bfloat16. Bound: relative error <= 2**-8 per value (round to nearest even);
    no overflow for any finite fp32 value below ~3.4e38.

    Example:
        >>> import torch
        >>> BF16().compress(torch.ones(10)).nbytes
        20
    """

    name = "bf16"
    wire_dtype = torch.bfloat16
