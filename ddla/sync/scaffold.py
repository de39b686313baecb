"""``scaffold``: stochastic controlled averaging with client and server control variates.

Karimireddy, Kale, Mohri, Reddi, Stich & Suresh 2020, "SCAFFOLD: Stochastic Controlled
Averaging for Federated Learning", ICML, arXiv 1910.06378 (Algorithm 1, option II). Client i
starts from the global x with its control variate c_i (0 at first) and the server's c:

    local step:  y ← y - η_l (g_i(y) - c_i + c)        (the gradient gains c - c_i)
    after K steps:  c_i⁺ = c_i - c + (x - y) / (K η_l)
    sends Δy_i = y - x and Δc_i = c_i⁺ - c_i
    server:  x ← x + η_g mean_S(Δy_i),   c ← c + (|S| / M) mean_S(Δc_i)

Means are unweighted, as in the paper (every sampled client counts 1), so c stays the mean
of all M clients' c_i. The c_i live on disk (:class:`ddla.fed.client_state.ClientStore`, one
sparse file per agent under the run directory), and each client trains on its home agent
``client % agents``, where its c_i is. η_l is the client optimizer's current learning rate.

Example:
    >>> from ddla.sync import STRATEGIES
    >>> STRATEGIES["scaffold"].home_clients
    True
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ddla.fed.client_state import ClientStore
from ddla.sync.federated import FederatedStrategy

if TYPE_CHECKING:
    from ddla.fed import FedConfig


class Scaffold(FederatedStrategy):
    """Control-variate corrected local steps; server and client variates updated per round."""

    name: ClassVar[str] = "scaffold"
    weighted: ClassVar[bool] = False
    home_clients: ClassVar[bool] = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: The server control variate c (the same on every agent).
        self.c = torch.zeros(self.dim)
        self.store: ClientStore | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    def bind(self, fed: FedConfig, *, clients: int, state_dir: Path | None = None) -> None:
        super().bind(fed, clients=clients, state_dir=state_dir)
        world, rank = self.transport.world_size, self.transport.rank
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ddla-scaffold-")
            state_dir = Path(self._tmp.name)
        rows = -(-clients // world)
        self.store = ClientStore(
            Path(state_dir) / f"scaffold-c-agent{rank}.f32", rows=rows, dim=self.dim
        )

    @property
    def payload_dim(self) -> int:
        return 2 * self.dim  # Δy_i and Δc_i

    def _row(self, client: int) -> int:
        return client // self.transport.world_size

    def client_variate(self, client: int) -> torch.Tensor:
        """c_i as stored (zeros before the client's first round)."""
        assert self.store is not None, "bind() first"
        return self.store.read(self._row(client))

    def begin_client(self, client: int, global_: torch.Tensor) -> None:
        self._ci = self.client_variate(client)
        self._correction = self.c - self._ci

    def adjust_grads(self) -> None:
        self.add_to_grads(self._correction)

    def payload(self, client: int, update: torch.Tensor, steps: int) -> torch.Tensor:
        assert self.store is not None
        lr = float(self.optimizer.param_groups[0]["lr"])
        ci_new = self._ci - self.c - update / (max(steps, 1) * lr)
        self.store.write(self._row(client), ci_new)
        return torch.cat([update, ci_new - self._ci])

    @torch.no_grad()
    def server_update(
        self, global_: torch.Tensor, aggregate: torch.Tensor, *, accepted: int = 0
    ) -> torch.Tensor:
        d = self.dim
        self.c = self.c + (accepted / self.clients) * aggregate[d:]
        return global_ + self.server_lr * aggregate[:d]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "c": self.c}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state.get("c") is not None:
            self.c = state["c"]

    def close(self) -> None:
        super().close()
        if self.store is not None:
            self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()
