"""The federated client host: one call is one round of federated training on this agent.

``__call__(round)``: sample the round's clients (:func:`ddla.fed.sample_clients`; Poisson
sampling under ``fed.dp``; the same on every agent), take this agent's share (round-robin, or
each client's home agent for strategies with per-client state), and train them *one after
another* from the round's global model — reset the parameters to the global model and clear
the optimizer state (no client state stays resident; what a strategy keeps per client is on
disk), run E epochs of minibatch B on the client's index array with the strategy's gradient
hook (FedProx, SCAFFOLD), and take the update ``w_k - w``. A ``fed.byzantine`` client replaces
it by its attack. Updates with NaN/Inf are rejected and logged with the client id;
``fed.clip`` bounds each one's L2 norm. With ``fed.aggregate=mean`` the agent keeps a running
sum weighted by example counts (or 1 per client) and makes ONE call to the strategy's
Aggregator per round (compressors and secure masking apply); under ``fed.dp`` the sum is of
clipped updates, Gaussian noise σS is added (once, or in shares by every agent) and the
denominator is the expected count qM (:mod:`ddla.fed.privacy`). A robust rule instead
all-gathers the individual updates (fp32) and applies the rule on every agent alike. The
strategy's :meth:`~ddla.sync.federated.FederatedStrategy.server_update` makes the next global
model, which every agent holds when the call returns.

Example (one agent, two clients of a tiny linear task):

    >>> import numpy as np, torch
    >>> from ddla.comm import Transport
    >>> from ddla.fed import FedConfig
    >>> from ddla.sync import SyncConfig, build_strategy
    >>> _ = torch.manual_seed(0); x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
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
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ddla.aggregate.robust import clip_norm, parse_rule
from ddla.compute.base import Compute
from ddla.fed.byzantine import malicious_clients, parse_byzantine
from ddla.fed.privacy import Accountant, noise_share
from ddla.fed.sampling import assign, assign_home, client_batches, poisson_sample, sample_clients

if TYPE_CHECKING:
    from ddla.fed import FedConfig
    from ddla.sync.federated import FederatedStrategy

log = logging.getLogger("ddla.fed")


class FederatedRound(Compute):
    """One federated round per call over ``clients`` (index arrays into ``x``/``y``);
    ``state_dir`` holds what strategies keep per client (a temporary directory if None)."""

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
        state_dir: Path | None = None,
    ) -> None:
        self.strategy, self.optimizer, self.loss = strategy, optimizer, loss
        self.x, self.y, self.clients, self.fed, self.seed = x, y, list(clients), fed, seed
        self.rule = parse_rule(fed.aggregate)
        self.transport = strategy.transport
        strategy.bind(fed, clients=len(self.clients), state_dir=state_dir)
        self.byzantine = parse_byzantine(fed.byzantine)
        self.malicious = malicious_clients(self.byzantine, clients=len(self.clients), seed=seed)
        self.classes = int(y.max()) + 1 if len(y) else 0
        self.accountant = (
            Accountant(q=fed.fraction, noise=fed.dp_noise, delta=fed.dp_delta)
            if fed.dp != "none"
            else None
        )
        #: One record per round: clients sampled, accepted, rejected ids, bytes, wall, ε.
        self.history: list[dict[str, Any]] = []

    @property
    def model(self) -> torch.nn.Module:
        return self.strategy.model

    def sample(self, round_: int) -> np.ndarray:
        """The round's client ids (the same on every agent)."""
        fed, m = self.fed, len(self.clients)
        if fed.dp != "none":
            return poisson_sample(round_=round_, clients=m, fraction=fed.fraction, seed=self.seed)
        return sample_clients(round_=round_, clients=m, fraction=fed.fraction, seed=self.seed)

    def shares(self, sampled: Sequence[int]) -> list[list[int]]:
        """Which agent trains which sampled client."""
        world = self.transport.world_size
        deal = assign_home if self.strategy.home_clients else assign
        return deal(sampled, world=world)

    def _train_client(self, client: int, round_: int) -> tuple[float, int, int]:
        idx, s = self.clients[client], self.strategy
        flip = self.byzantine is not None and self.byzantine.kind == "labelflip"
        flip = flip and client in self.malicious
        total, seen, steps = 0.0, 0, 0
        for epoch in range(self.fed.epochs):
            for b in client_batches(
                idx, batch=self.fed.batch, epoch=epoch, round_=round_, client=client,
                seed=self.seed,
            ):  # fmt: skip
                bi = torch.from_numpy(b)
                target = self.classes - 1 - self.y[bi] if flip else self.y[bi]
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.loss(s.model(self.x[bi]), target)
                loss.backward()
                s.adjust_grads()
                self.optimizer.step()
                total, seen, steps = total + loss.item() * len(b), seen + len(b), steps + 1
        return total, seen, steps

    def _client_update(self, c: int, step: int, global_: torch.Tensor) -> torch.Tensor:
        update = self.strategy.flat() - global_
        if c in self.malicious and self.byzantine is not None:
            seed = int(np.random.SeedSequence([self.seed, step, c]).generate_state(1)[0])
            update = self.byzantine.attack(update, torch.Generator().manual_seed(seed))
        return update

    def __call__(self, step: int) -> torch.Tensor:
        start = time.perf_counter()
        sent0 = self.transport.stats.totals("train")["bytes_sent"]
        fed, s = self.fed, self.strategy
        sampled = self.sample(step)
        shares = self.shares(sampled)
        mine = shares[self.transport.rank]
        global_ = s.flat()
        running = torch.zeros(s.payload_dim)
        weight, count, loss_sum, loss_n = 0.0, 0, 0.0, 0
        kept: list[torch.Tensor] = []
        rejected: list[int] = []
        for c in mine:
            s.load_flat(global_)
            self.optimizer.state.clear()  # client optimizer state is not kept across rounds
            s.begin_client(c, global_)
            ls, n, steps = self._train_client(c, step)
            update = self._client_update(c, step, global_)
            if not bool(torch.isfinite(update).all()):
                log.warning("round %d: client %d update rejected (NaN/Inf)", step, c)
                rejected.append(c)
                continue
            if fed.clip > 0:
                update = clip_norm(update, fed.clip)
            payload = s.payload(c, update, steps)
            loss_sum, loss_n = loss_sum + ls, loss_n + n
            if self.rule.robust:
                kept.append(payload)
                continue
            w = len(self.clients[c]) if s.weighted and fed.dp == "none" else 1.0
            running += w * payload
            weight, count = weight + w, count + 1
        s.load_flat(global_)
        if self.rule.robust:
            aggregate, accepted = self._robust(kept, max(1, max(map(len, shares))))
        else:
            aggregate, accepted = self._mean(running, weight, count)
        if aggregate is None:
            log.warning("round %d: no client update accepted; global model unchanged", step)
        else:
            s.load_flat(s.server_update(global_, aggregate, accepted=accepted))
        record = {
            "round": step + 1, "clients": len(sampled), "trained_here": len(mine),
            "accepted": accepted, "rejected": rejected,
            "bytes_sent": int(self.transport.stats.totals("train")["bytes_sent"] - sent0),
            "wall_s": time.perf_counter() - start,
        }  # fmt: skip
        if self.accountant is not None:
            record["epsilon"] = self.accountant.epsilon(rounds=step + 1)
        self.history.append(record)
        return torch.tensor(loss_sum / loss_n if loss_n else float("nan"))

    def _mean(
        self, running: torch.Tensor, weight: float, count: int
    ) -> tuple[torch.Tensor | None, int]:
        # One scalar all-reduce gives the total weight W and accepted count K; each agent then
        # sends running * N / W, so the Aggregator's plain mean over N agents is sum / W.
        fed, world = self.fed, self.transport.world_size
        totals = torch.tensor([weight, float(count)], dtype=torch.float64)
        self.transport.all_reduce(totals, op="sum", tag="train")
        total_w, accepted = float(totals[0]), round(float(totals[1]))
        if fed.dp != "none":
            # DP-FedAvg: noise sigma*S on the sum, fixed denominator q*M (the sampled Gaussian).
            std = fed.dp_noise * fed.clip
            if fed.dp == "distributed":
                running = running + noise_share(running.numel(), std=std / math.sqrt(world))
            elif self.transport.rank == 0:
                running = running + noise_share(running.numel(), std=std)
            denom = fed.fraction * len(self.clients)
            return self.strategy.aggregator.mean([running * (world / denom)], keys=["fed"])[0], (
                accepted
            )
        if total_w <= 0:  # every agent sees the same total of 0: none accepted
            return None, 0
        return self.strategy.aggregator.mean([running * (world / total_w)], keys=["fed"])[0], (
            accepted
        )

    def _robust(self, kept: list[torch.Tensor], slots: int) -> tuple[torch.Tensor | None, int]:
        # Agents hold at most `slots` updates (the largest share); pad to that, with a flag row
        # per slot, so one fixed-shape all-gather carries them (rejected/padded slots are off).
        d = self.strategy.payload_dim
        buf = torch.zeros(slots, d + 1)
        for i, u in enumerate(kept):
            buf[i, :d], buf[i, d] = u, 1.0
        rows = torch.cat(self.transport.all_gather(buf, tag="train"))
        updates = rows[rows[:, d] > 0, :d]
        if len(updates) < self.rule.min_updates():
            log.warning("%d updates left: %s needs %d", len(updates), self.fed.aggregate,
                        self.rule.min_updates())  # fmt: skip
            return None, len(updates)
        return self.rule(updates), len(updates)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rounds": len(self.history), "per_round": self.history}
        fed = self.fed
        if self.byzantine is not None:
            out["byzantine"] = {"spec": fed.byzantine, "clients": sorted(self.malicious)}
        if self.accountant is not None:
            out["dp"] = {
                "mode": fed.dp, "epsilon": self.history[-1]["epsilon"] if self.history else 0.0,
                "delta": fed.dp_delta, "noise_multiplier": fed.dp_noise, "clip": fed.clip,
                "sampling_rate": fed.fraction, "rounds": len(self.history),
                "accountant": "dp_accounting.rdp.RdpAccountant (Poisson-sampled Gaussian)",
            }  # fmt: skip
        return {"federated": out}
