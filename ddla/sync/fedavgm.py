"""``fedavgm``: FedAvg with server momentum.

Hsu, Qi & Brown 2019, "Measuring the Effects of Non-Identical Data Distribution for
Federated Visual Classification", arXiv 1909.06335 (FedAvgM). With Δ the example-weighted
mean of the client updates ``w_k - w``: ``v ← β v + Δ``, ``w ← w + η v`` (β =
``fed.server_momentum``, η = ``fed.server_lr``; v starts at 0). β = 0 is FedAvg with a server
learning rate. This is Flower's ``FedAvgM`` with its pseudo-gradient ``-Δ``.

Example:
    >>> from ddla.config import RunConfig
    >>> c = RunConfig.load(None, ["sync.strategy=fedavgm", "fed.clients=10"])
    >>> c.fed.server_momentum
    0.9
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ddla.sync.federated import FederatedStrategy


class FedAvgM(FederatedStrategy):
    """Heavy-ball momentum on the aggregated update at the server."""

    name: ClassVar[str] = "fedavgm"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.velocity: torch.Tensor | None = None

    @torch.no_grad()
    def server_update(
        self, global_: torch.Tensor, aggregate: torch.Tensor, *, accepted: int = 0
    ) -> torch.Tensor:
        beta = self.fed.server_momentum if self.fed is not None else 0.9
        v = torch.zeros_like(aggregate) if self.velocity is None else self.velocity
        self.velocity = beta * v + aggregate
        return global_ + self.server_lr * self.velocity

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "velocity": self.velocity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.velocity = state.get("velocity")
