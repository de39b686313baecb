"""Secure aggregation: pairwise additive masks that cancel in the sum (Bonawitz et al. 2017).

"Practical Secure Aggregation for Privacy-Preserving Machine Learning", Bonawitz et al., CCS 2017.
Every pair of agents ``i < j`` shares a seed (X25519 + HKDF, agreed at the join handshake).
For aggregation round ``r`` both expand it with AES-256-CTR (nonce = ``r``) into a mask
``m_ij`` uniform in the ring Z_M, ``M = 2**ring_bits``; agent ``i`` adds ``+m_ij``, agent ``j``
adds ``-m_ij``. What an agent puts on the wire, ``enc(x_i) + sum_j ±m_ij mod M``, is uniform
and independent of ``x_i`` to anyone who lacks its seeds, yet the masks cancel in the sum.

**Exact in fixed point.** Values are encoded as ``round(x * 2**frac_bits)`` in int64 and the
ring is ``2**52`` (default), so the all-reduce sums at most 2047 ring elements without int64
overflow and the result, reduced mod M, is *exactly* the sum of the encoded values. The only
error is the encoding's rounding, at most ``2**-(frac_bits+1)`` per value and agent
(``3e-8`` at the default 24 bits); a value whose sum over agents leaves ``±2**(ring_bits -
frac_bits - 1)`` (``±1.3e8``) raises instead of wrapping.

**Overhead.** An int64 ring element is 8 bytes against 4 for fp32, so a masked all-reduce moves
exactly 2.0x the bytes of the plain one (the paper reports 1.73x-1.98x); the seeds cost nothing
extra because they come from the join handshake.

**Dropouts.** If agent ``d`` leaves after the others masked their inputs for a round, its masks
``m_id`` would not cancel. Each survivor ``i`` removes its own masks with ``d``
(:meth:`SecureAggregator.remove_dropped`), which it can because it holds the pair seed, before
the survivors reduce; this is Bonawitz's recovery with the secret-shared seeds replaced by the
survivor's own copy (there is no server to reconstruct them for). Limits: forming the survivor
group is the Transport's job (this module only fixes the masks), and with two survivors each
learns the other's input from the sum, as any sum of two would reveal.

Example (three agents simulated in one process):

    >>> import torch
    >>> seeds = {(0, 1): b"a" * 32, (0, 2): b"b" * 32, (1, 2): b"c" * 32}
    >>> xs = [torch.tensor([0.5, -1.0]), torch.tensor([0.25, 2.0]), torch.tensor([1.0, 0.0])]
    >>> masked = [mask(encode(x), rank=r, seeds={p: seeds[tuple(sorted((r, p)))]
    ...            for p in range(3) if p != r}, round=0) for r, x in enumerate(xs)]
    >>> decode(torch.stack(masked).sum(0)).tolist()
    [1.75, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ddla.errors import SecurityError

if TYPE_CHECKING:
    from ddla.comm import Transport
    from ddla.security.identity import Session

RING_BITS = 52
FRAC_BITS = 24


def encode(x: torch.Tensor, *, frac_bits: int = FRAC_BITS, ring_bits: int = RING_BITS):
    """Fixed-point encode a float tensor into the ring Z_{2**ring_bits} (int64)."""
    scaled = torch.round(x.detach().to(torch.float64) * 2.0**frac_bits)
    limit = 2.0 ** (ring_bits - 1)
    # inf/NaN first: inf would otherwise be reported as merely out of range.
    if not torch.isfinite(scaled).all():
        raise SecurityError("secure aggregation cannot encode inf/NaN", help="the update diverged")
    if scaled.numel() and scaled.abs().max().item() >= limit:
        raise SecurityError(
            f"value {x.abs().max().item():.3g} is outside the secure-aggregation fixed-point "
            f"range ±{limit / 2.0**frac_bits:.3g}",
            help="lower security.frac_bits or check the update for divergence",
        )
    return scaled.to(torch.int64) % (1 << ring_bits)


def decode(total: torch.Tensor, *, frac_bits: int = FRAC_BITS, ring_bits: int = RING_BITS):
    """Map a ring element (a sum of encoded values) back to float64, two's-complement style."""
    m = 1 << ring_bits
    total = total % m
    signed = torch.where(total >= m // 2, total - m, total)
    return signed.to(torch.float64) / 2.0**frac_bits


def pair_mask(seed: bytes, *, round: int, numel: int, ring_bits: int = RING_BITS) -> torch.Tensor:
    """The mask a pair shares for ``round``: AES-256-CTR keystream read as uniform ring elements.

    Uniform because ``M`` is a power of two and the keystream bits are uniform.
    """
    nonce = round.to_bytes(8, "big") + bytes(8)
    stream = Cipher(algorithms.AES(seed), modes.CTR(nonce)).encryptor().update(bytes(8 * numel))
    words = np.frombuffer(stream, dtype=np.uint64) & np.uint64((1 << ring_bits) - 1)
    return torch.from_numpy(words.astype(np.int64))


def mask(
    encoded: torch.Tensor,
    *,
    rank: int,
    seeds: dict[int, bytes],
    round: int,
    ring_bits: int = RING_BITS,
) -> torch.Tensor:
    """Add this agent's pairwise masks to an encoded tensor: ``+m`` toward higher ranks, ``-m``
    toward lower ones, so each pair's masks cancel in the sum."""
    out = encoded.reshape(-1).clone()
    for peer, seed in sorted(seeds.items()):
        m = pair_mask(seed, round=round, numel=out.numel(), ring_bits=ring_bits)
        out = out + m if peer > rank else out - m
    return (out % (1 << ring_bits)).reshape(encoded.shape)


class SecureAggregator:
    """Masked all-reduce over the authenticated members of a :class:`Session`.

    Every member must call :meth:`all_reduce` the same number of times in the same order (the
    round counter picks fresh masks per call; reusing a mask would leak differences of inputs).
    """

    def __init__(
        self, session: Session, *, frac_bits: int = FRAC_BITS, ring_bits: int = RING_BITS
    ) -> None:
        if not 0 < frac_bits < ring_bits <= 62:
            raise SecurityError(
                f"need 0 < frac_bits < ring_bits <= 62, got {frac_bits}, {ring_bits}"
            )
        if len(session.members) >= 1 << (63 - ring_bits):
            raise SecurityError(
                f"{len(session.members)} agents overflow int64 sums of {ring_bits}-bit elements",
                help="lower the ring size (ring_bits) for this many agents",
            )
        self.session = session
        self.rank = session.rank
        self.frac_bits = frac_bits
        self.ring_bits = ring_bits
        self.round = 0
        self.seeds = {p: session.pair_key(p, "secagg") for p in session.members if p != self.rank}

    def next_round(self) -> int:
        """The round for the next masked call (fresh masks per call; never reused)."""
        self.round += 1
        return self.round - 1

    def masked(self, x: torch.Tensor, *, round: int) -> torch.Tensor:
        """This agent's contribution for ``round``: encoded and masked (int64, looks random)."""
        enc = encode(x, frac_bits=self.frac_bits, ring_bits=self.ring_bits)
        return mask(enc, rank=self.rank, seeds=self.seeds, round=round, ring_bits=self.ring_bits)

    def remove_dropped(
        self, masked: torch.Tensor, *, round: int, dropped: Sequence[int]
    ) -> torch.Tensor:
        """Take the masks shared with agents that ``dropped`` out of an already-masked tensor."""
        gone = {p: self.seeds[p] for p in dropped if p in self.seeds}
        # Adding the opposite masks: mask() with the sign flipped is mask() of the negation.
        undo = mask(
            torch.zeros_like(masked),
            rank=self.rank,
            seeds=gone,
            round=round,
            ring_bits=self.ring_bits,
        )
        return (masked - undo) % (1 << self.ring_bits)

    def decode(self, total: torch.Tensor) -> torch.Tensor:
        """Decode the reduced sum of every member's masked contribution (float64)."""
        return decode(total, frac_bits=self.frac_bits, ring_bits=self.ring_bits)

    def all_reduce(
        self,
        transport: Transport,
        x: torch.Tensor,
        *,
        op: str = "avg",
        tag: str = "train",
        timeout_s: float | None = None,
    ) -> torch.Tensor:
        """Sum (``op="sum"``) or mean (``op="avg"``) of ``x`` over the members, in place.

        Peers on the wire (and in a ring all-reduce, the partial sums they forward) only see
        masked values. Returns ``x`` holding the result in its own dtype.
        """
        if op not in ("sum", "avg"):
            raise SecurityError(f"secure aggregation supports sum and avg, not {op!r}")
        contribution = self.masked(x, round=self.next_round())
        transport.all_reduce(contribution, op="sum", tag=tag, timeout_s=timeout_s)
        result = self.decode(contribution)
        if op == "avg":
            result = result / len(self.session.members)
        x.copy_(result.reshape(x.shape).to(x.dtype))
        return x
