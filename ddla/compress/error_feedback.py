"""Error feedback: what a lossy compressor dropped is added to the next tensor it compresses.

Seide et al. 2014 (1-bit SGD), Karimireddy et al. 2019 ("Error Feedback Fixes SignSGD",
arXiv 1901.09847). For each tensor key the wrapper keeps ``residual = (x + residual) - x_hat``
where ``x_hat`` is exactly what the peers will decode, so over many calls the sum of what was
sent equals the sum of what was given, minus one bounded residual.
"""

from __future__ import annotations

from typing import Any

import torch

from ddla.compress.base import Compressor, Payload


class ErrorFeedback(Compressor):
    """Wrap a lossy compressor (or chain) with a per-key residual.

    Example:
        >>> import torch
        >>> from ddla.compress.topk import TopK
        >>> c = ErrorFeedback(TopK(0.5))
        >>> p = c.compress(torch.tensor([4.0, 1.0]), key="g")
        >>> c.residuals["g"].tolist()   # the dropped 1.0 waits for the next call
        [0.0, 1.0]
        >>> c.decompress(c.compress(torch.tensor([0.0, 0.5]), key="g")).tolist()
        [0.0, 1.5]
    """

    wants_error_feedback = True

    def __init__(self, inner: Compressor) -> None:
        self.inner = inner
        self.residuals: dict[str, torch.Tensor] = {}

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.spec

    @property
    def spec(self) -> str:
        return self.inner.spec

    @property
    def requantize_block(self) -> int | None:
        # A blockwise code (``sign``) keeps the reduce-scatter scheme; the wire passes a key per
        # chunk and per partial mean, so each rounding has its own residual.
        return self.inner.requantize_block

    def payload_nbytes(self, numel: int) -> int | None:
        return self.inner.payload_nbytes(numel)

    def compress(self, tensor: torch.Tensor, *, key: str = "0") -> Payload:
        corrected = tensor.detach().float()
        residual = self.residuals.get(key)
        if residual is not None and residual.shape == corrected.shape:
            corrected = corrected + residual
        payload = self.inner.compress(corrected, key=key)
        decoded = self.inner.decompress(payload)
        self.residuals[key] = corrected - decoded.float()
        payload.dtype = tensor.dtype
        # decompress(payload) from here on casts the same values to tensor.dtype: keep that.
        payload.decoded = decoded.to(tensor.dtype)
        return payload

    def decompress(self, payload: Payload) -> torch.Tensor:
        return self.inner.decompress(payload)

    def state_dict(self) -> dict[str, Any]:
        return {
            "residuals": {k: v.clone() for k, v in self.residuals.items()},
            "inner": self.inner.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.residuals = {k: v.clone() for k, v in state["residuals"].items()}
        self.inner.load_state_dict(state["inner"])
