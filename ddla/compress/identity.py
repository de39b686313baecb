"""No compression: fp32 on the wire (``none``), the reference every ratio is measured against."""

from __future__ import annotations

import torch

from ddla.compress.base import Compressor, Payload


class Identity(Compressor):
    """Send the tensor as fp32; exact (error 0).

    Example:
        >>> import torch
        >>> c = Identity()
        >>> c.compress(torch.ones(10)).nbytes
        40
    """

    name = "none"
    summable = True

    def compress(self, tensor: torch.Tensor, *, key: str = "0") -> Payload:
        return Payload({"x": tensor.detach().float()}, tuple(tensor.shape), tensor.dtype)

    def decompress(self, payload: Payload) -> torch.Tensor:
        x = payload.tensors["x"]
        assert isinstance(x, torch.Tensor)
        return x.to(payload.dtype).view(payload.shape)
