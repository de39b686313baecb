"""``fedavg``: Federated Averaging.

McMahan, Moore, Ramage, Hampson & Agüera y Arcas 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data", AISTATS, arXiv 1602.05629 (Algorithm 1). Each round a
fraction C of the clients trains E local epochs with minibatch B from the global model; the
server replaces the global model by the mean of the clients' models weighted by their
example counts n_k (here: adds ``fed.server_lr`` times the weighted mean of the updates
``w_k - w``, which is the same with server lr 1).

Example:
    >>> from ddla.sync import STRATEGIES
    >>> STRATEGIES["fedavg"].federated
    True
"""

from __future__ import annotations

from typing import ClassVar

from ddla.sync.federated import FederatedStrategy


class FedAvg(FederatedStrategy):
    """Weighted average of the sampled clients' updates."""

    name: ClassVar[str] = "fedavg"
