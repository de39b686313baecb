"""Half precision (IEEE fp16) on the wire: 2 bytes per value, summable by a plain all-reduce.

As in PyTorch's ``fp16_compress_hook``, agents divide by the world size *before* casting so that
the sum stays inside fp16's range (max 65504).
"""

from __future__ import annotations

import torch

from ddla.compress.base import Compressor, Payload


class FP16(Compressor):
    """Cast to fp16. Bound: relative error <= 2**-11 per value inside fp16's normal range
    (|x| in [6.1e-5, 65504]); below it, absolute error <= 2**-25.

    Example:
        >>> import torch
        >>> FP16().compress(torch.ones(10)).nbytes
        20
    """

    name = "fp16"
    summable = True
    wire_dtype = torch.float16

    def compress(self, tensor: torch.Tensor, *, key: str = "0") -> Payload:
        x = tensor.detach().to(self.wire_dtype)
        return Payload({"x": x}, tuple(tensor.shape), tensor.dtype)

    def decompress(self, payload: Payload) -> torch.Tensor:
        x = payload.tensors["x"]
        assert isinstance(x, torch.Tensor)
        return x.to(payload.dtype).view(payload.shape)
