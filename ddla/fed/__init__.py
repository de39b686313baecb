"""Federated mode: many logical clients multiplexed over few agents (``fed.*``).

Clients are index arrays into the training set (a partition of it into ``fed.clients``
parts), so memory grows with the data, not with the number of clients; no model or optimizer
state is kept per client. Each round samples ``fed.fraction`` of the clients
(:func:`sample_clients`), deals them round-robin to the agents (:func:`assign`), and the
federated Compute (:class:`ddla.compute.federated.FederatedRound`) trains them.

Example:
    >>> sample_clients(round_=0, clients=10, fraction=0.3, seed=0).tolist()
    [0, 4, 6]
    >>> assign([0, 4, 6], world=2)
    [[0, 6], [4]]
"""

from __future__ import annotations

from ddla.fed.config import FedConfig
from ddla.fed.sampling import assign, client_batches, sample_clients

__all__ = ["FedConfig", "assign", "client_batches", "sample_clients"]
