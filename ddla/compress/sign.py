"""``sign[:BLOCK]``: one bit per value (its sign) and one fp32 scale per block, with error feedback.

Scaled sign compression as in Karimireddy et al. 2019, "Error Feedback Fixes SignSGD and other
Gradient Compression Schemes" (arXiv 1901.09847, the ``C(x) = ||x||_1 / d * sign(x)`` of
EF-SignSGD), applied per block of ``BLOCK`` values (default 1024) so one large block does not
set the magnitude of another: a value decodes to ``+s`` or ``-s`` with ``s`` the mean absolute
value of its block. ``ceil(n / 8)`` bytes of packed bits + 4 bytes per block, about 1.03 bits
per value at the default block. What the code loses is kept by error feedback
(:mod:`ddla.compress.error_feedback`, applied by ``build_compressor``) and sent later.

The mean over agents uses the reduce-scatter scheme of int8/int4
(:func:`ddla.aggregate.wire.compressed_mean`): each agent's chunks and the owner's re-encoded
partial mean both keep their own residual, so both roundings are fed back (the two-sided error
compensation of Tang et al. 2019, "DoubleSqueeze", arXiv 1905.05957).

Example:
    >>> import torch
    >>> c = Sign(4)
    >>> p = c.compress(torch.tensor([3.0, -1.0, 0.5, -0.5, 2.0, 2.0, -2.0, 2.0]))
    >>> p.nbytes  # 1 byte of bits + 2 fp32 scales
    9
    >>> c.decompress(p).tolist()
    [1.25, -1.25, 1.25, -1.25, 2.0, 2.0, -2.0, 2.0]
"""

from __future__ import annotations

import math

import torch

from ddla.compress.base import Compressor, Payload
from ddla.errors import ConfigError

DEFAULT_BLOCK = 1024
_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


class Sign(Compressor):
    """Blockwise scaled sign: bit ``x >= 0`` per value, ``mean(|x|)`` of the block as its scale."""

    name = "sign"
    wants_error_feedback = True

    def __init__(self, block: int = DEFAULT_BLOCK) -> None:
        if block < 8 or block % 8:
            raise ConfigError(
                f"sign: block size must be a multiple of 8 and >= 8, got {block}",
                help=f"write e.g. sign:{DEFAULT_BLOCK}",
            )
        self.block = block

    @property
    def spec(self) -> str:
        return self.name if self.block == DEFAULT_BLOCK else f"{self.name}:{self.block}"

    @property
    def requantize_block(self) -> int | None:
        return self.block

    def payload_nbytes(self, numel: int) -> int | None:
        return math.ceil(numel / 8) + 4 * max(1, math.ceil(numel / self.block))

    def compress(self, tensor: torch.Tensor, *, key: str = "0") -> Payload:
        flat = tensor.detach().float().reshape(-1)
        n = flat.numel()
        n_blocks = max(1, math.ceil(n / self.block))
        padded = torch.zeros(n_blocks * self.block, dtype=torch.float32)
        padded[:n] = flat
        blocks = padded.view(n_blocks, self.block)
        # The mean |x| over the block's real values (the padding of the last block is no value).
        counts = torch.full((n_blocks,), float(self.block))
        counts[-1] = n - (n_blocks - 1) * self.block or self.block
        scales = blocks.abs().sum(dim=1) / counts
        bits = (padded[: math.ceil(n / 8) * 8] >= 0).to(torch.uint8).view(-1, 8)
        packed = (bits * _WEIGHTS).sum(dim=1, dtype=torch.uint8)
        return Payload(
            {"bits": packed, "scales": scales}, tuple(tensor.shape), tensor.dtype, {"n": n}
        )

    def decompress(self, payload: Payload) -> torch.Tensor:
        packed, scales = payload.tensors["bits"], payload.tensors["scales"]
        assert isinstance(packed, torch.Tensor) and isinstance(scales, torch.Tensor)
        n = int(payload.meta["n"])
        bits = ((packed[:, None] & _WEIGHTS) > 0).view(-1)[:n]
        per_value = scales.repeat_interleave(self.block)[:n]
        out = torch.where(bits, per_value, -per_value)
        return out.to(payload.dtype).view(payload.shape)
