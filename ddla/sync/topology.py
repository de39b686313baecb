"""Gossip topologies and their mixing weights (pure: no process group).

A topology says, for round ``t`` of a gossip run of ``n`` agents, whom agent ``i`` receives
from and with which weight: row ``i`` of a doubly stochastic mixing matrix ``W(t)``. Static
graphs (``ring``, ``torus``) use Metropolis-Hastings weights, ``W_ij = 1 / (1 + max(d_i, d_j))``
for neighbours and the rest on the diagonal (Xiao & Boyd 2004), so ``W`` is symmetric and
doubly stochastic for any degrees. ``exponential`` is the one-peer exponential graph (Ying et
al. 2021, "Exponential Graph is Provably Efficient for Decentralized Deep Training"): in round
``t`` agent ``i`` sends to ``i + 2^k`` and averages with what ``i - 2^k`` sent, ``k = t mod
log2(n)``; for ``n`` a power of two, ``log2(n)`` rounds reach exact consensus. ``random`` is a
fresh random perfect matching each round (the same on every agent: seeded by the round), pairs
averaging halfway.

The consensus distance of the agents' parameters shrinks by the second largest eigenvalue
modulus of ``W`` per round (:func:`spectral_gap` is one minus it).

Example:
    >>> [round(float(w), 4) for w in mixing_matrix("ring", 4)[0]]
    [0.3333, 0.3333, 0.0, 0.3333]
    >>> round(second_eigenvalue(mixing_matrix("ring", 4)), 4)
    0.3333
    >>> plan("exponential", 8, rank=0, round_=1)
    Plan(send=(2,), recv=(6,), weights={6: 0.5}, self_weight=0.5)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class Plan(NamedTuple):
    """One agent's part of one gossip round."""

    send: tuple[int, ...]
    recv: tuple[int, ...]
    weights: dict[int, float]
    self_weight: float


def _torus_shape(n: int) -> tuple[int, int]:
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


def neighbours(topology: str, n: int, i: int) -> list[int]:
    """The neighbours of ``i`` in a static graph (``ring``, ``torus``), without ``i``."""
    if topology == "ring":
        found = {(i - 1) % n, (i + 1) % n}
    elif topology == "torus":
        rows, cols = _torus_shape(n)
        r, c = divmod(i, cols)
        found = {
            ((r - 1) % rows) * cols + c,
            ((r + 1) % rows) * cols + c,
            r * cols + (c - 1) % cols,
            r * cols + (c + 1) % cols,
        }
    else:
        raise ValueError(f"{topology!r} is not a static topology")
    found.discard(i)
    return sorted(found)


def _matching(n: int, round_: int, seed: int) -> dict[int, int]:
    rng = np.random.default_rng([seed, round_])
    order = rng.permutation(n)
    pairs: dict[int, int] = {}
    for a, b in zip(order[0::2], order[1::2], strict=False):
        pairs[int(a)], pairs[int(b)] = int(b), int(a)
    return pairs


def plan(topology: str, n: int, *, rank: int, round_: int, seed: int = 0) -> Plan:
    """Whom ``rank`` sends to and receives from in round ``round_``, and the weights."""
    if n == 1:
        return Plan((), (), {}, 1.0)
    if topology in ("ring", "torus"):
        mine = neighbours(topology, n, rank)
        weights = {j: 1.0 / (1 + max(len(mine), len(neighbours(topology, n, j)))) for j in mine}
        return Plan(tuple(mine), tuple(mine), weights, 1.0 - sum(weights.values()))
    if topology == "exponential":
        hops = max(1, math.ceil(math.log2(n)))
        step = 2 ** (round_ % hops)
        dst, src = (rank + step) % n, (rank - step) % n
        if dst == rank:
            return Plan((), (), {}, 1.0)
        return Plan((dst,), (src,), {src: 0.5}, 0.5)
    if topology == "random":
        peer = _matching(n, round_, seed).get(rank)
        if peer is None:
            return Plan((), (), {}, 1.0)
        return Plan((peer,), (peer,), {peer: 0.5}, 0.5)
    raise ValueError(f"unknown topology {topology!r}")


def mixing_matrix(topology: str, n: int, round_: int = 0, seed: int = 0) -> np.ndarray:
    """``W(round_)``: row ``i`` holds the weights agent ``i`` averages with."""
    w = np.zeros((n, n))
    for i in range(n):
        p = plan(topology, n, rank=i, round_=round_, seed=seed)
        w[i, i] = p.self_weight
        for j, v in p.weights.items():
            w[i, j] += v
    return w


def second_eigenvalue(w: np.ndarray) -> float:
    """The second largest singular value of ``W`` (its eigenvalue modulus when symmetric): the
    factor by which one round shrinks the distance to consensus, at worst."""
    return float(np.linalg.svd(w - np.full_like(w, 1.0 / len(w)), compute_uv=False)[0])


def spectral_gap(w: np.ndarray) -> float:
    """``1 - second_eigenvalue(W)``."""
    return 1.0 - second_eigenvalue(w)
