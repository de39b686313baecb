"""Split a dataset's sample indices among agents: IID, label skew, pathological shards, size skew.

Schemes, chosen by a spec string (see :func:`parse_partition`):

- ``iid``: a seeded shuffle cut into ``n_agents`` near-equal parts.
- ``dirichlet:ALPHA``: label skew. For each class, the agents' shares are drawn from
  Dir(ALPHA, ..., ALPHA) and the class's samples are cut accordingly (Hsu, Qi & Brown 2019,
  "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
  Classification", arXiv 1909.06335). Small ALPHA (0.1) gives each agent few classes; large
  ALPHA (100) approaches IID.
- ``shards:K``: the pathological non-IID split of FedAvg (McMahan et al. 2017,
  "Communication-Efficient Learning of Deep Networks from Decentralized Data", AISTATS,
  arXiv 1602.05629): samples sorted by label, cut into ``n_agents * K`` shards, ``K`` shards
  dealt to each agent.
- ``quantity:ALPHA``: quantity skew. Agent sizes proportional to a Dir(ALPHA) draw, labels
  IID (Li, Diao, Chen & He 2022, "Federated Learning on Non-IID Data Silos: An Experimental
  Study", ICDE, arXiv 2102.02079).
- ``contiguous``: samples in stored order, cut into ``n_agents`` near-equal runs, each cut moved
  to the nearest change of label when one lies within half a part. For a text corpus the
  "labels" are document ids, so every agent reads whole documents (the natural split of
  text across data owners, as in DiLoCo's non-i.i.d. C4 shards, Douillard et al. 2023).

Every result is a list of ``n_agents`` sorted, disjoint ``int64`` index arrays, each non-empty,
identical for identical ``(spec, labels, n_agents, seed)``. All schemes cover every sample,
except ``shards:K`` with fewer shards than classes (see :class:`Shards`).

Example:
    >>> import numpy as np
    >>> labels = np.repeat(np.arange(4), 25)
    >>> parts = partition("shards:1", labels, n_agents=4, seed=0)
    >>> [sorted(set(labels[p].tolist())) for p in parts]
    [[1], [3], [2], [0]]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ddla.errors import ConfigError

__all__ = [
    "IID",
    "PARTITIONERS",
    "PARTITION_FORMS",
    "Contiguous",
    "Dirichlet",
    "Partitioner",
    "Quantity",
    "Shards",
    "parse_partition",
    "partition",
]

PARTITION_FORMS = (
    "iid, dirichlet:ALPHA (ALPHA>0), shards:K or pathological:K (integer K>=1), "
    "quantity:ALPHA (ALPHA>0), contiguous"
)

Partitioner = Callable[[np.ndarray, int, int], list[np.ndarray]]
"""``(labels, n_agents, seed) -> list of index arrays``; deterministic for a seed."""


def _split_by_counts(indices: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    return np.split(indices, np.cumsum(counts)[:-1])


def _proportional_counts(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total`` in proportion to ``weights`` (largest remainder)."""
    quotas = weights / weights.sum() * total
    counts = np.floor(quotas).astype(np.int64)
    leftover = int(total - counts.sum())
    if leftover:
        counts[np.argsort(-(quotas - counts), kind="stable")[:leftover]] += 1
    return counts


@dataclass(frozen=True, slots=True)
class IID:
    """Uniform random split into near-equal parts (sizes differ by at most one)."""

    def __call__(self, labels: np.ndarray, n_agents: int, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        return np.array_split(rng.permutation(len(labels)), n_agents)


@dataclass(frozen=True, slots=True)
class Dirichlet:
    """Label skew: per class, agent shares ~ Dir(alpha) (Hsu et al. 2019, arXiv 1909.06335).

    With a small ``alpha`` some agents can draw no sample at all; each such agent then takes
    one sample from the currently largest agent. This bounded, deterministic repair replaces
    the usual resample-until-no-agent-is-empty loop, which can run for a very long time at
    ``alpha`` around 0.01.
    """

    alpha: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(
                f"dirichlet alpha must be a positive number, got {self.alpha}",
                help="use e.g. dirichlet:0.5 (smaller = more label skew)",
            )

    def __call__(self, labels: np.ndarray, n_agents: int, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        buckets: list[list[np.ndarray]] = [[] for _ in range(n_agents)]
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(n_agents, self.alpha))
            for agent, piece in enumerate(
                _split_by_counts(members, _proportional_counts(shares, len(members)))
            ):
                buckets[agent].append(piece)
        parts = [np.concatenate(b) for b in buckets]
        for agent in range(n_agents):
            if len(parts[agent]) == 0:
                donor = int(np.argmax([len(p) for p in parts]))
                take = int(rng.integers(len(parts[donor])))
                parts[agent] = parts[donor][take : take + 1]
                parts[donor] = np.delete(parts[donor], take)
        return parts


@dataclass(frozen=True, slots=True)
class Shards:
    """FedAvg's pathological split: ``k`` label-sorted shards per agent (McMahan et al. 2017).

    Shards are cut inside each class (a class gets shards in proportion to its size), so a
    shard never straddles two classes and every agent sees at most ``k`` classes, even when
    class sizes are not multiples of the shard size. If there are fewer shards
    (``n_agents * k``) than classes, the classes left without a shard are dropped: the result
    then covers only the dealt classes, as it must for "k classes per agent".
    """

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(
                f"shards K must be an integer >= 1, got {self.k!r}",
                help="use e.g. shards:2 (each agent gets 2 classes)",
            )

    def __call__(self, labels: np.ndarray, n_agents: int, seed: int) -> list[np.ndarray]:
        n_shards = n_agents * self.k
        if n_shards > len(labels):
            raise ConfigError(
                f"shards:{self.k} with {n_agents} agents needs {n_shards} shards but there are "
                f"only {len(labels)} samples",
                help="lower K or the number of agents, or use more data",
            )
        rng = np.random.default_rng(seed)
        classes, sizes = np.unique(labels, return_counts=True)
        if self.k > len(classes):
            raise ConfigError(
                f"shards:{self.k} gives each agent {self.k} classes, but the data has only "
                f"{len(classes)}",
                help=f"use shards:K with K <= {len(classes)} (shards:{len(classes)} is close to "
                "iid; use iid for that)",
            )
        # Largest remainder gives class c at most ceil(n_shards*size_c/N) <= size_c shards,
        # so no shard is empty.
        per_class = _proportional_counts(sizes.astype(np.float64), n_shards)
        shards: list[np.ndarray] = []
        for c, count in zip(classes, per_class, strict=True):
            if count:
                members = rng.permutation(np.flatnonzero(labels == c))
                shards.extend(np.array_split(members, count))
        order = rng.permutation(len(shards))
        return [
            np.concatenate([shards[s] for s in order[a * self.k : (a + 1) * self.k]])
            for a in range(n_agents)
        ]


@dataclass(frozen=True, slots=True)
class Quantity:
    """Quantity skew: agent sizes proportional to a Dir(alpha) draw, labels IID.

    Each agent is first given one sample, then the rest are shared out in proportion to the
    draw, so every agent is non-empty whatever ``alpha``.
    """

    alpha: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(
                f"quantity alpha must be a positive number, got {self.alpha}",
                help="use e.g. quantity:0.5 (smaller = more unequal sizes)",
            )

    def __call__(self, labels: np.ndarray, n_agents: int, seed: int) -> list[np.ndarray]:
        rng = np.random.default_rng(seed)
        shares = rng.dirichlet(np.full(n_agents, self.alpha))
        counts = 1 + _proportional_counts(shares, len(labels) - n_agents)
        return _split_by_counts(rng.permutation(len(labels)), counts)


@dataclass(frozen=True, slots=True)
class Contiguous:
    """Stored order cut into near-equal runs, cuts snapped to the nearest label change.

    A cut at ``k * N / n_agents`` moves to the nearest index where the label differs from
    the one before (a document boundary, for text) if that lies within half a part and keeps
    every part non-empty; otherwise it stays put (a document larger than a part is split).
    The seed is not used: the split is the data's own order.
    """

    def __call__(self, labels: np.ndarray, n_agents: int, seed: int) -> list[np.ndarray]:
        n = len(labels)
        changes = np.flatnonzero(labels[1:] != labels[:-1]) + 1
        cuts = [0]
        for k in range(1, n_agents):
            target = k * n / n_agents
            cut = round(target)
            if len(changes):
                near = changes[np.argmin(np.abs(changes - target))]
                if abs(near - target) <= n / (2 * n_agents):
                    cut = int(near)
            # Keep each part non-empty and leave room for the parts still to come.
            cut = min(max(cut, cuts[-1] + 1), n - (n_agents - k))
            cuts.append(cut)
        cuts.append(n)
        return [np.arange(a, b, dtype=np.int64) for a, b in itertools.pairwise(cuts)]


PARTITIONERS: dict[str, type] = {
    "iid": IID,
    "dirichlet": Dirichlet,
    "shards": Shards,
    "pathological": Shards,  # the name federated papers use for McMahan's label-sorted shards
    "quantity": Quantity,
    "contiguous": Contiguous,
}
"""Scheme name -> partitioner class; the spec's parameter (if any) is its one argument."""


def _bad_spec(spec: str, why: str) -> ConfigError:
    return ConfigError(
        f"invalid partition {spec!r}: {why}; allowed forms: {PARTITION_FORMS}",
        help="e.g. --set data.partition=dirichlet:0.5",
    )


def parse_partition(spec: str) -> Partitioner:
    """Validate a spec string and return the partitioner it names.

    Example:
        >>> parse_partition("dirichlet:0.3")
        Dirichlet(alpha=0.3)
        >>> parse_partition("shards:2")
        Shards(k=2)
    """
    if not isinstance(spec, str):
        raise _bad_spec(repr(spec), "not a string")
    name, sep, arg = spec.strip().partition(":")
    cls = PARTITIONERS.get(name)
    if cls is None:
        raise _bad_spec(spec, f"unknown scheme {name!r}")
    if cls in (IID, Contiguous):
        if sep:
            raise _bad_spec(spec, f"{name} takes no parameter")
        return cls()
    if not arg:
        raise _bad_spec(spec, f"{name} needs a parameter")
    if cls is Shards:
        try:
            k = int(arg)
        except ValueError:
            raise _bad_spec(spec, f"K must be an integer, got {arg!r}") from None
        if k < 1:
            raise _bad_spec(spec, f"K must be >= 1, got {k}")
        return Shards(k=k)
    try:
        alpha = float(arg)
    except ValueError:
        raise _bad_spec(spec, f"ALPHA must be a number, got {arg!r}") from None
    if not (math.isfinite(alpha) and alpha > 0):
        raise _bad_spec(spec, f"ALPHA must be > 0, got {arg}")
    return cls(alpha=alpha)


def partition(
    spec: str | Partitioner,
    labels: np.ndarray | torch.Tensor,
    n_agents: int,
    seed: int,
) -> list[np.ndarray]:
    """Split the indices of ``labels`` among ``n_agents`` agents by a scheme spec.

    Returns ``n_agents`` sorted, disjoint, non-empty ``int64`` index arrays.

    Raises:
        ConfigError: a bad spec (naming the allowed forms), ``n_agents < 1`` or more agents
            than samples.
    """
    part = parse_partition(spec) if isinstance(spec, str) else spec
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if labels.ndim != 1:
        raise ConfigError(
            f"partition needs 1-D labels, got shape {labels.shape}",
            help="pass the training labels, e.g. dataset.y_train",
        )
    if isinstance(n_agents, bool) or not isinstance(n_agents, int) or n_agents < 1:
        raise ConfigError(
            f"number of agents must be an integer >= 1, got {n_agents!r}",
            help="set the number of agents to 1 or more",
        )
    if n_agents > len(labels):
        raise ConfigError(
            f"cannot give {n_agents} agents at least one sample each from {len(labels)} samples",
            help="use fewer agents or a larger dataset (data.size)",
        )
    parts = part(labels, n_agents, seed)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
