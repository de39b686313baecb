"""``powersgd:RANK``: low-rank compression by one warm-started power iteration.

Vogels, Karimireddy and Jaggi 2019, "PowerSGD: Practical Low-Rank Gradient Compression for
Distributed Optimization" (arXiv 1905.13232). A tensor is viewed as a matrix ``M`` (n x m: its
first dimension by the rest); with the ``Q``
(m x r) kept from the previous call for that tensor (the *warm start*), ``P = orth(M Q)`` and
``Q = M^T P`` travel as fp32 — ``r (n + m)`` values instead of ``n m`` — and ``M_hat = P Q^T``.
Error feedback (:mod:`ddla.compress.error_feedback`) carries ``M - M_hat`` to the next call.
Vectors (biases, norms) and matrices that a rank-r factorization would not shrink are sent
as fp32 unchanged, as in PyTorch's ``powerSGD_hook``.

Unlike the paper, which all-reduces P and Q (all agents share one factorization), ddla
all-gathers each agent's own P and Q and averages the decoded matrices (see
``docs/compression.md``): one round instead of two and each agent keeps its own warm start.
"""

from __future__ import annotations

import math
import zlib

import torch

from ddla.compress.base import Compressor, Payload
from ddla.errors import ConfigError


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The matrix a tensor is viewed as — (dim 0, product of the rest) — or None for vectors."""
    if len(shape) < 2:
        return None
    return shape[0], math.prod(shape[1:])


class PowerSGD(Compressor):
    """Rank-``rank`` approximation by one power iteration per call, warm-started per tensor.

    Bound: ``M_hat = P P^T M`` is an orthogonal projection of M, so
    ``||M - M_hat||_F <= ||M||_F``; a matrix of rank <= ``rank`` is recovered exactly (up to
    fp32 rounding).

    Example:
        >>> import torch
        >>> c = PowerSGD(2)
        >>> m = torch.randn(64, 2) @ torch.randn(2, 32)       # rank 2
        >>> p = c.compress(m, key="w")
        >>> p.nbytes  # P (64x2) + Q (32x2) in fp32
        768
        >>> torch.allclose(c.decompress(p), m, atol=1e-4)
        True
    """

    name = "powersgd"
    wants_error_feedback = True

    def __init__(self, rank: int, *, seed: int = 0) -> None:
        if rank < 1:
            raise ConfigError(
                f"powersgd: rank must be an integer >= 1, got {rank}",
                help="write e.g. powersgd:4",
            )
        self.rank = rank
        self.seed = seed
        self._q: dict[str, torch.Tensor] = {}

    @property
    def spec(self) -> str:
        return f"powersgd:{self.rank}"

    def _initial_q(self, key: str, m: int, r: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed + zlib.crc32(key.encode()))
        return torch.randn(m, r, generator=gen)

    def compress(self, tensor: torch.Tensor, *, key: str = "0") -> Payload:
        shape = tuple(tensor.shape)
        flat = tensor.detach().float().reshape(-1)
        dims = matrix_shape(shape)
        n, m = dims if dims is not None else (1, flat.numel())
        r = min(self.rank, n, m)
        if dims is None or r * (n + m) >= n * m:  # low rank would not save bytes: send as is
            return Payload({"x": flat.clone()}, shape, tensor.dtype, {"raw": True})
        mat = flat.view(n, m)
        q = self._q.get(key)
        if q is None or q.shape != (m, r):
            q = self._initial_q(key, m, r)
        p, _ = torch.linalg.qr(mat @ q)
        # QR returns P column-major; peers rebuild it row-major from the bytes, and a matmul on
        # other strides can round differently (seen: 1e-7). Same layout = same decoded values.
        p = p.contiguous()
        q = mat.T @ p
        # A zero matrix gives Q = 0, from which the power iteration can never recover: restart.
        keep = torch.isfinite(q).all() and bool(q.abs().sum() > 0)
        self._q[key] = q.clone() if keep else self._initial_q(key, m, r)
        return Payload({"p": p, "q": q}, shape, tensor.dtype, {"raw": False, "n": n, "m": m})

    def decompress(self, payload: Payload) -> torch.Tensor:
        if payload.meta["raw"]:
            x = payload.tensors["x"]
            assert isinstance(x, torch.Tensor)
            return x.float().to(payload.dtype).view(payload.shape)
        p, q = payload.tensors["p"], payload.tensors["q"]
        assert isinstance(p, torch.Tensor) and isinstance(q, torch.Tensor)
        return (p.float() @ q.float().T).to(payload.dtype).view(payload.shape)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {key: q.clone() for key, q in self._q.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self._q = {key: q.clone() for key, q in state.items()}
