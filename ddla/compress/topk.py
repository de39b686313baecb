"""``topk:RATIO``: send only the largest-magnitude fraction of values, with error feedback.

Sparsification as in Stich et al. 2018 ("Sparsified SGD with Memory", arXiv 1809.07599): the
``k = ceil(RATIO * n)`` values of largest magnitude travel as fp32 values + int32 indices
(8 bytes each); the rest is kept by error feedback (:mod:`ddla.compress.error_feedback`) and
added to the next tensor, so nothing is lost, only delayed.
"""

from __future__ import annotations

import math

import torch

from ddla.compress.base import Compressor, Payload
from ddla.errors import ConfigError


class TopK(Compressor):
    """Keep the ``ratio`` fraction of largest-magnitude values.

    Bound: kept values are exact; every dropped value is no larger in magnitude than the
    smallest kept one, and ``||x - x_hat||^2`` is the sum of the ``n - k`` smallest squares.

    Example:
        >>> import torch
        >>> c = TopK(0.1)
        >>> p = c.compress(torch.arange(100.0))
        >>> p.nbytes  # 10 fp32 values + 10 int32 indices
        80
        >>> sorted(c.decompress(p).nonzero().view(-1).tolist())[:3]
        [90, 91, 92]
    """

    name = "topk"
    wants_error_feedback = True

    def __init__(self, ratio: float) -> None:
        if not 0.0 < ratio <= 1.0:
            raise ConfigError(
                f"topk: ratio must be in (0, 1], got {ratio}",
                help="write e.g. topk:0.01 to send the largest 1% of values",
            )
        self.ratio = ratio

    @property
    def spec(self) -> str:
        return f"topk:{self.ratio:g}"

    def k_for(self, numel: int) -> int:
        """How many values a tensor of ``numel`` values sends (fixed, so peers agree)."""
        return max(1, min(numel, math.ceil(self.ratio * numel)))

    def compress(self, tensor: torch.Tensor, *, key: str = "0") -> Payload:
        flat = tensor.detach().float().reshape(-1)
        k = self.k_for(flat.numel())
        _, idx = torch.topk(flat.abs(), k, sorted=False)
        # Sorted indices make the payload deterministic and the scatter cache-friendly.
        idx, _ = torch.sort(idx)
        values = flat[idx]
        return Payload(
            {"values": values, "indices": idx.to(torch.int32)}, tuple(tensor.shape), tensor.dtype
        )

    def decompress(self, payload: Payload) -> torch.Tensor:
        values, idx = payload.tensors["values"], payload.tensors["indices"]
        assert isinstance(values, torch.Tensor) and isinstance(idx, torch.Tensor)
        out = torch.zeros(math.prod(payload.shape), dtype=torch.float32)
        out[idx.long()] = values.float()
        return out.to(payload.dtype).view(payload.shape)
