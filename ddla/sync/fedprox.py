"""``fedprox``: FedAvg with a proximal term on each client.

Li, Sahu, Zaheer, Sanjabi, Talwalkar & Smith 2020, "Federated Optimization in Heterogeneous
Networks", MLSys, arXiv 1812.06127 (Algorithm 2). Client k minimises
``F_k(w) + (μ/2)·||w - w^t||²`` from the global model ``w^t``: each local step's gradient gains
``μ (w - w^t)``, which keeps heterogeneous clients near the global model. μ is ``fed.mu``;
μ = 0 is FedAvg. The server aggregates as FedAvg (weighted by example counts).

Example:
    >>> from ddla.config import RunConfig
    >>> RunConfig.load(None, ["sync.strategy=fedprox", "fed.clients=10", "fed.mu=0.1"]).fed.mu
    0.1
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ddla.sync.federated import FederatedStrategy


class FedProx(FederatedStrategy):
    """Proximal gradient ``μ (w - w^t)`` added to every local step of every client."""

    name: ClassVar[str] = "fedprox"

    def begin_client(self, client: int, global_: torch.Tensor) -> None:
        self._anchor = self.views(global_)

    @torch.no_grad()
    def adjust_grads(self) -> None:
        mu = self.fed.mu if self.fed is not None else 0.0
        if mu == 0:
            return
        for p, w0 in zip(self.params, self._anchor, strict=True):
            prox = mu * (p.detach() - w0)
            if p.grad is None:
                p.grad = prox
            else:
                p.grad.add_(prox)
