"""``ternary[:BLOCK]``: codes {-1, 0, +1} times one fp32 scale per block, 5 codes per byte, with
error feedback.

Per block of ``BLOCK`` values (default 1024) the threshold and scale of Ternary Weight Networks
(Li, Zhang & Liu 2016, arXiv 1605.04711, their approximation of the best ternary code):
``t = 0.7 * mean|x|``, values with ``|x| > t`` keep their sign and decode to ``±s`` with ``s`` the
mean magnitude of those values, the others decode to 0. Unlike a sign code, values near zero
(the dead border pixels of an image model's first layer) stay zero. Three levels pack base 3,
five codes per byte (3⁵ = 243 ≤ 256): ``ceil(n / 5)`` bytes + 4 bytes per block, about 1.63 bits
per value at the default block (TernGrad, Wen et al. 2017, arXiv 1705.07878, sends ternary
gradients at 2 bits, rounded stochastically; here the rounding is deterministic and what it
drops is kept by error feedback, Karimireddy et al. 2019, arXiv 1901.09847).

Like ``sign``, the mean over agents takes the reduce-scatter scheme of int8/int4 with error
feedback on both roundings (:mod:`ddla.aggregate.wire`).

Example:
    >>> import torch
    >>> c = Ternary(5)
    >>> x = torch.tensor([3.0, -1.0, 0.1, -0.2, 2.0])   # mean|x| 1.26, threshold 0.882
    >>> p = c.compress(x)
    >>> p.nbytes  # 1 byte of codes + 1 fp32 scale
    5
    >>> c.decompress(p).tolist()
    [2.0, -2.0, 0.0, 0.0, 2.0]
"""

from __future__ import annotations

import math

import torch

from ddla.compress.base import Compressor, Payload
from ddla.errors import ConfigError

DEFAULT_BLOCK = 1024
#: TWN's threshold, as a fraction of the block's mean magnitude.
THRESHOLD = 0.7
_POWERS = torch.tensor([1, 3, 9, 27, 81], dtype=torch.int32)


class Ternary(Compressor):
    """Blockwise ternary codes, packed five per byte."""

    name = "ternary"
    wants_error_feedback = True

    def __init__(self, block: int = DEFAULT_BLOCK) -> None:
        if block < 2:
            raise ConfigError(
                f"ternary: block size must be >= 2, got {block}",
                help=f"write e.g. ternary:{DEFAULT_BLOCK}",
            )
        self.block = block

    @property
    def spec(self) -> str:
        return self.name if self.block == DEFAULT_BLOCK else f"{self.name}:{self.block}"

    @property
    def requantize_block(self) -> int | None:
        return self.block

    def payload_nbytes(self, numel: int) -> int | None:
        return math.ceil(numel / 5) + 4 * max(1, math.ceil(numel / self.block))

    def compress(self, tensor: torch.Tensor, *, key: str = "0") -> Payload:
        flat = tensor.detach().float().reshape(-1)
        n = flat.numel()
        n_blocks = max(1, math.ceil(n / self.block))
        padded = torch.zeros(n_blocks * self.block, dtype=torch.float32)
        padded[:n] = flat
        mags = padded.view(n_blocks, self.block).abs()
        counts = torch.full((n_blocks,), float(self.block))
        counts[-1] = n - (n_blocks - 1) * self.block or self.block  # padding is no value
        threshold = THRESHOLD * mags.sum(dim=1) / counts
        kept = mags > threshold[:, None]
        scales = (mags * kept).sum(dim=1) / kept.sum(dim=1).clamp(min=1)
        codes = (torch.sign(padded) * kept.view(-1)).to(torch.int32)[:n] + 1  # 0, 1, 2
        groups = torch.nn.functional.pad(codes, (0, -n % 5), value=1).view(-1, 5)
        packed = (groups * _POWERS).sum(dim=1).to(torch.uint8)
        return Payload(
            {"codes": packed, "scales": scales}, tuple(tensor.shape), tensor.dtype, {"n": n}
        )

    def decompress(self, payload: Payload) -> torch.Tensor:
        packed, scales = payload.tensors["codes"], payload.tensors["scales"]
        assert isinstance(packed, torch.Tensor) and isinstance(scales, torch.Tensor)
        n = int(payload.meta["n"])
        codes = (packed.to(torch.int32)[:, None] // _POWERS) % 3
        signs = (codes.view(-1)[:n] - 1).float()
        out = signs * scales.repeat_interleave(self.block)[:n]
        return out.to(payload.dtype).view(payload.shape)
