"""Seeded client sampling per round, dealing to agents, and a client's batch order."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sample_clients(*, round_: int, clients: int, fraction: float, seed: int) -> np.ndarray:
    """The sorted ids of the ``max(1, round(fraction * clients))`` clients of ``round_``.

    Uniform without replacement (McMahan et al. 2017, Algorithm 1), from a generator seeded
    by ``(seed, round_)`` alone: every agent computes the same sample, and a resumed run
    samples exactly what the uninterrupted one would.
    """
    m = max(1, round(fraction * clients))
    rng = np.random.default_rng([seed, 0xFED, round_])
    return np.sort(rng.choice(clients, size=m, replace=False))


def assign(sampled: Sequence[int], *, world: int) -> list[list[int]]:
    """Deal sampled client ids round-robin to ``world`` agents (agent r gets ``sampled[r::N]``)."""
    ids = [int(c) for c in sampled]
    return [ids[r::world] for r in range(world)]


def client_batches(
    indices: np.ndarray, *, batch: int, epoch: int, round_: int, client: int, seed: int
) -> list[np.ndarray]:
    """One epoch of a client's minibatches: a seeded shuffle cut into ``batch``-sized pieces
    (the last may be smaller); ``batch = 0`` is the whole shard in one batch (B = inf)."""
    rng = np.random.default_rng([seed, round_, client, epoch])
    order = indices[rng.permutation(len(indices))]
    if batch == 0 or batch >= len(order):
        return [order]
    return [order[i : i + batch] for i in range(0, len(order), batch)]


def poisson_sample(*, round_: int, clients: int, fraction: float, seed: int) -> np.ndarray:
    """The sorted ids of ``round_``'s clients, each included independently with probability
    ``fraction`` (Poisson sampling: what the DP accountant's sampled Gaussian assumes; may be
    empty). Seeded by ``(seed, round_)`` alone, like :func:`sample_clients`."""
    rng = np.random.default_rng([seed, 0xD9, round_])
    return np.flatnonzero(rng.random(clients) < fraction)


def assign_home(sampled: Sequence[int], *, world: int) -> list[list[int]]:
    """Deal sampled clients to their home agent ``client % world``, for strategies that keep
    per-client state on the agent's disk (``scaffold``): a client always trains where its state
    is."""
    parts: list[list[int]] = [[] for _ in range(world)]
    for c in sampled:
        parts[int(c) % world].append(int(c))
    return parts
