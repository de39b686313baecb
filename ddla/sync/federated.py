"""Base of the federated strategies: the server side of a round.

In federated mode the agent's Compute (:class:`ddla.compute.federated.FederatedRound`) trains
clients and aggregates their updates through this strategy's :attr:`aggregator`; the
strategy owns what the server does with the aggregate (:meth:`server_update`) and starts
every agent from rank 0's parameters. It does nothing after a client's optimizer steps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ddla.sync.base import Strategy


class FederatedStrategy(Strategy):
    """Server update ``global += fed.server_lr * aggregate`` (subclasses may override)."""

    name: ClassVar[str] = "federated"
    default_optimizer: ClassVar[str] = "sgd"
    #: Marks the strategy as federated (``fed.*`` applies; the federated Compute runs).
    federated: ClassVar[bool] = True

    def __init__(self, *, server_lr: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server_lr = server_lr
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if self.transport.world_size > 1 and self.params:
            with torch.no_grad():
                flat = torch.cat([p.detach().reshape(-1).float() for p in self.params])
                self.transport.broadcast(flat, src=0, tag="control")
                self.load_flat(flat)

    def flat(self) -> torch.Tensor:
        """The trainable parameters as one fp32 vector (a copy)."""
        return torch.cat([p.detach().reshape(-1).float() for p in self.params])

    @torch.no_grad()
    def load_flat(self, flat: torch.Tensor) -> None:
        """Write one flat vector back into the trainable parameters."""
        offset = 0
        for p in self.params:
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    @torch.no_grad()
    def server_update(self, global_: torch.Tensor, aggregate: torch.Tensor) -> torch.Tensor:
        """The next global model from this round's global and the aggregated client update."""
        return global_ + self.server_lr * aggregate
