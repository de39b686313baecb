"""``fedadam``: adaptive server optimizer (FedOpt with Adam).

Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar & McMahan 2021, "Adaptive Federated
Optimization", ICLR, arXiv 2003.00295 (Algorithm 2). With Δ_t the mean client update
``w_k - w`` (weighted by example counts, as Flower's FedAdam weights its aggregate):

    m_t = β1 m_{t-1} + (1 - β1) Δ_t
    v_t = β2 v_{t-1} + (1 - β2) Δ_t²
    x_{t+1} = x_t + η m_t / (sqrt(v_t) + τ)

with m_{-1} = 0, v_{-1} = τ² and no bias correction, as in the paper. η = ``fed.server_lr``,
β1/β2/τ = ``fed.beta1``/``fed.beta2``/``fed.tau``. :mod:`ddla.sync.fedyogi` changes only v_t.

Example:
    >>> from ddla.config import RunConfig
    >>> RunConfig.load(None, ["sync.strategy=fedadam", "fed.clients=10"]).fed.tau
    0.001
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ddla.sync.federated import FederatedStrategy


class FedAdam(FederatedStrategy):
    """Adam on the aggregated update at the server (Reddi et al. 2021)."""

    name: ClassVar[str] = "fedadam"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor, beta2: float) -> torch.Tensor:
        """Adam's v_t."""
        return beta2 * v + (1 - beta2) * delta.square()

    @torch.no_grad()
    def server_update(
        self, global_: torch.Tensor, aggregate: torch.Tensor, *, accepted: int = 0
    ) -> torch.Tensor:
        assert self.fed is not None, "bind() first"
        b1, b2, tau = self.fed.beta1, self.fed.beta2, self.fed.tau
        m = torch.zeros_like(aggregate) if self.m is None else self.m
        v = torch.full_like(aggregate, tau * tau) if self.v is None else self.v
        self.m = b1 * m + (1 - b1) * aggregate
        self.v = self.second_moment(v, aggregate, b2)
        return global_ + self.server_lr * self.m / (self.v.sqrt() + tau)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "m": self.m, "v": self.v}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.m, self.v = state.get("m"), state.get("v")
