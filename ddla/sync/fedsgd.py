"""``fedsgd``: FederatedSGD, the baseline of McMahan et al. 2017 (arXiv 1602.05629, §2).

Each sampled client computes one gradient on its whole shard at the global model (E = 1,
B = inf, enforced at config time); the server applies the example-weighted mean gradient.
One client SGD step of lr η gives the update ``-η g_k``, so the weighted mean of updates is
``-η Σ n_k g_k / n``: FedSGD is FedAvg with E = 1, B = inf, as the paper notes.

Example:
    >>> from ddla.config import RunConfig
    >>> RunConfig.load(None, ["sync.strategy=fedsgd", "fed.clients=10", "fed.batch=0"]).fed.batch
    0
"""

from __future__ import annotations

from typing import ClassVar

from ddla.sync.federated import FederatedStrategy


class FedSGD(FederatedStrategy):
    """One full-shard gradient per client, weighted mean applied by the server."""

    name: ClassVar[str] = "fedsgd"
