"""Blockwise absmax quantization shared by ``int8`` and ``int4`` (Dettmers et al. 2022,
"8-bit Optimizers via Block-wise Quantization", arXiv 2110.02861).

The flattened tensor is cut into blocks of ``block`` values; each block is scaled by its own
absolute maximum so that one outlier only costs precision inside its block. Codes are symmetric
integers in ``[-L, L]`` (L = 127 for 8 bits, 7 for 4 bits) rounded to nearest, so the error of a
value is at most half a step: ``|x - x_hat| <= absmax(block) / (2 L)``. Scales travel as fp32
(4 bytes per block): with the default block of 128 that is 3 % on top of int8 and 6 % on top of
int4 — cheaper than fp16 scales, whose range (min normal 6e-5) is too small for pseudo-gradients.
"""

from __future__ import annotations

import math

import torch

from ddla.compress.base import Compressor, Payload
from ddla.errors import ConfigError

DEFAULT_BLOCK = 128


class Blockwise(Compressor):
    """Symmetric blockwise quantization to ``bits`` bits with one fp32 scale per block."""

    bits: int = 8

    def __init__(self, block: int = DEFAULT_BLOCK) -> None:
        if block < 2 or block % 2:
            raise ConfigError(
                f"{self.name}: block size must be an even integer >= 2, got {block}",
                help=f"write e.g. {self.name}:{DEFAULT_BLOCK}",
            )
        self.block = block
        self.levels = 2 ** (self.bits - 1) - 1

    @property
    def spec(self) -> str:
        return self.name if self.block == DEFAULT_BLOCK else f"{self.name}:{self.block}"

    @property
    def requantize_block(self) -> int | None:
        return self.block

    def payload_nbytes(self, numel: int) -> int | None:
        # bits per code, packed; one fp32 scale per block (at least one block, as _quantize)
        return math.ceil(numel * self.bits / 8) + 4 * max(1, math.ceil(numel / self.block))

    def _quantize(self, tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        flat = tensor.detach().float().reshape(-1)
        n = flat.numel()
        n_blocks = max(1, math.ceil(n / self.block))
        padded = torch.zeros(n_blocks * self.block, dtype=torch.float32)
        padded[:n] = flat
        blocks = padded.view(n_blocks, self.block)
        scales = blocks.abs().amax(dim=1) / self.levels
        # An all-zero block has scale 0; divide by 1 instead (its codes are 0 either way).
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        codes = torch.round(blocks / safe[:, None]).clamp_(-self.levels, self.levels)
        return codes.view(-1)[:n].to(torch.int8), scales, n

    def _dequantize(self, codes: torch.Tensor, scales: torch.Tensor, n: int) -> torch.Tensor:
        n_blocks = scales.numel()
        padded = torch.zeros(n_blocks * self.block, dtype=torch.float32)
        padded[:n] = codes.float()
        return (padded.view(n_blocks, self.block) * scales[:, None]).view(-1)[:n]

    def error_bound(self, tensor: torch.Tensor) -> torch.Tensor:
        """Per-value bound on ``|x - decompress(compress(x))|``: half a step of its block."""
        _, scales, n = self._quantize(tensor)
        per_value = (scales / 2).repeat_interleave(self.block)[:n]
        return per_value.view(tensor.shape)


class BlockwiseInt8(Blockwise):
    """Codes as one int8 per value."""

    bits = 8

    def compress(self, tensor: torch.Tensor, *, key: str = "0") -> Payload:
        codes, scales, _ = self._quantize(tensor)
        return Payload({"codes": codes, "scales": scales}, tuple(tensor.shape), tensor.dtype)

    def decompress(self, payload: Payload) -> torch.Tensor:
        codes, scales = payload.tensors["codes"], payload.tensors["scales"]
        assert isinstance(codes, torch.Tensor) and isinstance(scales, torch.Tensor)
        out = self._dequantize(codes, scales, codes.numel())
        return out.to(payload.dtype).view(payload.shape)
