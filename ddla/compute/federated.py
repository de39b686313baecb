"""The federated client host: one call is one round of federated training on this agent.

``__call__(round)``: sample the round's clients (:func:`ddla.fed.sample_clients`, the same on
every agent), take this agent's share (round-robin), and train them *one after another* from
the round's global model — reset the parameters to the global model and clear the optimizer
state (no client state stays resident), run E epochs of minibatch B on the client's index
array, and take the update ``w_k - w``. Updates with NaN/Inf are rejected and logged with the
client id; ``fed.clip`` bounds each one's L2 norm. With ``fed.aggregate=mean`` the agent keeps
a running sum weighted by example counts and makes ONE call to the strategy's Aggregator per
round (``mean(..., weight=n_agent)``: compressors and secure masking apply); a robust rule
instead all-gathers the individual updates (fp32) and applies the rule on every agent alike.
The strategy's :meth:`~ddla.sync.federated.FederatedStrategy.server_update` makes the next
global model, which every agent holds when the call returns.

Example (one agent, two clients of a tiny linear task):

    >>> import numpy as np, torch
    >>> from ddla.comm import Transport
    >>> from ddla.fed import FedConfig
    >>> from ddla.sync import SyncConfig, build_strategy
    >>> torch.manual_seed(0); x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    >>> model = torch.nn.Linear(3, 2); opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with Transport.single() as t:
    ...     s = build_strategy(SyncConfig(strategy="fedavg"), transport=t, model=model,
    ...                        optimizer=opt)
    ...     fed = FedConfig(clients=2, fraction=1.0, batch=5)
    ...     rnd = FederatedRound(strategy=s, optimizer=opt, loss=torch.nn.functional.cross_entropy,
    ...                          x=x, y=y, clients=np.array_split(np.arange(40), 2), fed=fed)
    ...     loss = rnd(0)
    >>> rnd.history[-1]["clients"]
    2
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ddla.aggregate.robust import clip_norm, parse_rule
from ddla.compute.base import Compute
from ddla.fed.sampling import assign, client_batches, sample_clients

if TYPE_CHECKING:
    from ddla.fed import FedConfig
    from ddla.sync.federated import FederatedStrategy

log = logging.getLogger("ddla.fed")


class FederatedRound(Compute):
    """One federated round per call over ``clients`` (index arrays into ``x``/``y``)."""

    name = "federated"

    def __init__(
        self,
        *,
        strategy: FederatedStrategy,
        optimizer: torch.optim.Optimizer,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        clients: Sequence[np.ndarray],
        fed: FedConfig,
        seed: int = 0,
    ) -> None:
        self.strategy, self.optimizer, self.loss = strategy, optimizer, loss
        self.x, self.y, self.clients, self.fed, self.seed = x, y, list(clients), fed, seed
        self.rule = parse_rule(fed.aggregate)
        self.transport = strategy.transport
        #: One record per round: clients sampled, accepted here, rejected ids, bytes, wall.
        self.history: list[dict[str, Any]] = []

    @property
    def model(self) -> torch.nn.Module:
        return self.strategy.model

    def _train_client(self, client: int, round_: int) -> tuple[float, int]:
        idx = self.clients[client]
        total, seen = 0.0, 0
        for epoch in range(self.fed.epochs):
            for b in client_batches(
                idx, batch=self.fed.batch, epoch=epoch, round_=round_, client=client,
                seed=self.seed,
            ):  # fmt: skip
                bi = torch.from_numpy(b)
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.loss(self.strategy.model(self.x[bi]), self.y[bi])
                loss.backward()
                self.optimizer.step()
                total, seen = total + loss.item() * len(b), seen + len(b)
        return total, seen

    def __call__(self, step: int) -> torch.Tensor:
        start = time.perf_counter()
        sent0 = self.transport.stats.totals("train")["bytes_sent"]
        fed, rank, world = self.fed, self.transport.rank, self.transport.world_size
        sampled = sample_clients(
            round_=step, clients=len(self.clients), fraction=fed.fraction, seed=self.seed
        )
        mine = assign(sampled, world=world)[rank]
        s = self.strategy
        global_ = s.flat()
        running = torch.zeros_like(global_)
        weight, loss_sum, loss_n = 0.0, 0.0, 0
        kept: list[torch.Tensor] = []
        rejected: list[int] = []
        for c in mine:
            s.load_flat(global_)
            self.optimizer.state.clear()  # client optimizer state is not kept across rounds
            ls, n = self._train_client(c, step)
            update = s.flat() - global_
            if not bool(torch.isfinite(update).all()):
                log.warning("round %d: client %d update rejected (NaN/Inf)", step, c)
                rejected.append(c)
                continue
            if fed.clip > 0:
                update = clip_norm(update, fed.clip)
            loss_sum, loss_n = loss_sum + ls, loss_n + n
            if self.rule.robust:
                kept.append(update)
            else:
                running += len(self.clients[c]) * update
                weight += len(self.clients[c])
        s.load_flat(global_)
        aggregate = (
            self._robust(kept, len(mine)) if self.rule.robust else self._mean(running, weight)
        )
        if aggregate is None:
            log.warning("round %d: no client update accepted; global model unchanged", step)
        else:
            s.load_flat(s.server_update(global_, aggregate))
        self.history.append({
            "round": step + 1, "clients": len(sampled), "trained_here": len(mine),
            "rejected": rejected,
            "bytes_sent": int(self.transport.stats.totals("train")["bytes_sent"] - sent0),
            "wall_s": time.perf_counter() - start,
        })  # fmt: skip
        return torch.tensor(loss_sum / loss_n if loss_n else float("nan"))

    def _mean(self, running: torch.Tensor, weight: float) -> torch.Tensor | None:
        local = running / weight if weight > 0 else running
        try:
            return self.strategy.aggregator.mean([local], keys=["fed"], weight=weight)[0]
        except ValueError:  # every agent sees the same all-reduced total of 0: none accepted
            return None

    def _robust(self, kept: list[torch.Tensor], slots_here: int) -> torch.Tensor | None:
        # Agents hold at most ceil(K/N) updates; pad to that, with a flag row per slot, so one
        # fixed-shape all-gather carries them (rejected or padded slots are flagged off).
        world = self.transport.world_size
        slots = -(-max(1, round(self.fed.fraction * len(self.clients))) // world)
        d = self.strategy.flat().numel()
        buf = torch.zeros(slots, d + 1)
        for i, u in enumerate(kept):
            buf[i, :d], buf[i, d] = u, 1.0
        rows = torch.cat(self.transport.all_gather(buf, tag="train"))
        updates = rows[rows[:, d] > 0, :d]
        if len(updates) < self.rule.min_updates():
            log.warning("%d updates left: %s needs %d", len(updates), self.fed.aggregate,
                        self.rule.min_updates())  # fmt: skip
            return None
        return self.rule(updates)

    def summary(self) -> dict[str, Any]:
        return {"federated": {"rounds": len(self.history), "per_round": self.history}}
