"""Base of the federated strategies: what a client does besides plain SGD, and what the
server does with the aggregate.

In federated mode the agent's Compute (:class:`ddla.compute.federated.FederatedRound`) trains
clients one after another and aggregates their updates through this strategy's
:attr:`aggregator`. The strategy contributes hooks, each a no-op here (plain FedAvg):

- :meth:`bind` — the run's ``fed.*`` settings, client count and a directory for client state;
- :meth:`begin_client` — before a client trains from the global model (load its state);
- :meth:`adjust_grads` — after each local backward, before the optimizer step (FedProx's
  proximal gradient, SCAFFOLD's control-variate correction);
- :meth:`payload` — what the client sends, from its update ``w_k - w`` (SCAFFOLD appends its
  control-variate change);
- :meth:`server_update` — the next global model from the aggregated payload (server learning
  rate, server momentum, server Adam/Yogi).

It starts every agent from rank 0's parameters and does nothing after a client's optimizer
steps (no step post-hook work).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ddla.sync.base import Strategy

if TYPE_CHECKING:
    from ddla.fed import FedConfig


class FederatedStrategy(Strategy):
    """Server update ``global += server_lr * aggregate`` (subclasses override the hooks)."""

    name: ClassVar[str] = "federated"
    default_optimizer: ClassVar[str] = "sgd"
    #: Marks the strategy as federated (``fed.*`` applies; the federated Compute runs).
    federated: ClassVar[bool] = True
    #: Clients count in proportion to their example counts (False: each counts 1).
    weighted: ClassVar[bool] = True
    #: Clients keep state on their home agent's disk, so they always train there.
    home_clients: ClassVar[bool] = False

    def __init__(self, *, server_lr: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server_lr = server_lr
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.fed: FedConfig | None = None
        self.clients = 0
        if self.transport.world_size > 1 and self.params:
            with torch.no_grad():
                flat = torch.cat([p.detach().reshape(-1).float() for p in self.params])
                self.transport.broadcast(flat, src=0, tag="control")
                self.load_flat(flat)

    def bind(self, fed: FedConfig, *, clients: int, state_dir: Path | None = None) -> None:
        """Receive the run's federated settings (called once by the federated Compute)."""
        self.fed, self.clients, self.server_lr = fed, clients, fed.server_lr

    @property
    def dim(self) -> int:
        """Number of trainable parameters D."""
        return sum(p.numel() for p in self.params)

    @property
    def payload_dim(self) -> int:
        """Length of what one client sends (:meth:`payload`): D unless a subclass adds more."""
        return self.dim

    def flat(self) -> torch.Tensor:
        """The trainable parameters as one fp32 vector (a copy)."""
        return torch.cat([p.detach().reshape(-1).float() for p in self.params])

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """``flat`` cut into views shaped like the trainable parameters."""
        out, offset = [], 0
        for p in self.params:
            out.append(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        return out

    @torch.no_grad()
    def load_flat(self, flat: torch.Tensor) -> None:
        """Write one flat vector back into the trainable parameters."""
        for p, v in zip(self.params, self.views(flat), strict=True):
            p.copy_(v)

    @torch.no_grad()
    def add_to_grads(self, flat: torch.Tensor) -> None:
        """``grad += flat`` (shaped per parameter); a parameter without a grad gets ``flat``."""
        for p, v in zip(self.params, self.views(flat), strict=True):
            if p.grad is None:
                p.grad = v.clone().to(p.dtype)
            else:
                p.grad.add_(v.to(p.grad.dtype))

    # -- client hooks ---------------------------------------------------------------------
    def begin_client(self, client: int, global_: torch.Tensor) -> None:
        """Called before ``client`` trains from the round's ``global_`` model."""

    def adjust_grads(self) -> None:
        """Called after each local backward, before the client's optimizer step."""

    def payload(self, client: int, update: torch.Tensor, steps: int) -> torch.Tensor:
        """What ``client`` sends after ``steps`` local steps gave ``update = w_k - w``."""
        return update

    # -- server ---------------------------------------------------------------------------
    @torch.no_grad()
    def server_update(
        self, global_: torch.Tensor, aggregate: torch.Tensor, *, accepted: int = 0
    ) -> torch.Tensor:
        """The next global model from this round's global and the aggregated payload;
        ``accepted`` is how many client updates went into it (over all agents)."""
        return global_ + self.server_lr * aggregate
