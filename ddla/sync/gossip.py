"""``gossip``: decentralized parallel SGD; each agent averages with its neighbours.

D-PSGD (Lian et al. 2017, "Can Decentralized Algorithms Outperform Centralized Algorithms?",
NeurIPS): every agent steps its own optimizer, and every ``sync.every`` H steps replaces its
parameters by a weighted average of its own and its neighbours' (row ``i`` of the mixing matrix
of :mod:`ddla.sync.topology`: ``ring``, ``torus``, ``exponential``, ``random``; Metropolis-
Hastings weights on the static graphs). No agent waits for anyone but its neighbours, so a
straggler slows its neighbourhood first. Parameters travel by the Transport's point-to-point
seam, each with its sender's clock reading, so on virtual clocks a message arrives no earlier
than it was sent and an agent that waited for a slower neighbour sees it as waiting.

The consensus distance, ``sqrt(mean_i ||x_i - mean_j x_j||^2)`` over the agents' parameters, is
measured every ``sync.consensus_every`` rounds (an ``eval``-tagged all-reduce: bookkeeping, not
the algorithm's traffic) and goes into ``summary.json`` and the report's plots; it shrinks by
the topology's second eigenvalue per round while nothing else moves the parameters.
:meth:`finish` averages all agents' parameters once (the average is D-PSGD's output model), so
every agent ends identical.

Compression is refused: gossip of compressed parameters diverges without CHOCO-SGD's error
compensation (Koloskova et al. 2019), which is not built.

Example (one agent: nothing to average, the same code path):

    >>> import torch
    >>> from ddla.comm import Transport
    >>> from ddla.sync import SyncConfig, build_strategy
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with Transport.single() as t:
    ...     s = build_strategy(SyncConfig(strategy="gossip", consensus_every=1), transport=t,
    ...                        model=model, optimizer=opt)
    ...     model(torch.randn(8, 4)).sum().backward(); opt.step()
    ...     s.finish(); s.close()
    >>> s.consensus
    [[1, 0.0]]
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ddla.errors import CommError, ConfigError, PeerFailedError
from ddla.sync import ps_wire as wire
from ddla.sync.base import Strategy
from ddla.sync.param_server import _broadcast_initial
from ddla.sync.topology import plan

#: Backend channels of gossip messages (header, body).
HEADER, BODY = 5311, 5312


class Gossip(Strategy):
    """Average with the topology's neighbours every H steps; see the module docstring."""

    name: ClassVar[str] = "gossip"
    default_optimizer: ClassVar[str] = "sgd"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        p = self.aggregator.protection
        if p.masking is not None or p.audit is not None:
            raise ConfigError(
                "sync.strategy=gossip does not seal the parameters it exchanges yet",
                help="turn security.enabled off, or use allreduce/diloco for a secured run",
            )
        if self.config.compress != "none" and self.transport.world_size > 1:
            raise ConfigError(
                f"sync.compress={self.config.compress} with gossip: compressed gossip needs "
                "CHOCO-SGD's error compensation, which is not built",
                help="use sync.compress=none with gossip",
            )
        self.params = [q for q in self.model.parameters() if q.requires_grad]
        self.every: int = self.config.every
        _broadcast_initial(self.transport, self.params)
        self.rounds = 0
        self.last_sync = 0
        #: ``[step, consensus distance]`` per measurement.
        self.consensus: list[list[float]] = []

    def _flat(self) -> torch.Tensor:
        return torch.cat([q.detach().reshape(-1).float() for q in self.params])

    @torch.no_grad()
    def _write(self, flat: torch.Tensor) -> None:
        offset = 0
        for q in self.params:
            q.copy_(flat[offset : offset + q.numel()].view_as(q))
            offset += q.numel()

    def after_step(self) -> None:
        if self.local_step % self.every == 0:
            self._gossip()
            self.last_sync = self.local_step
            if self.rounds % self.config.consensus_every == 0:
                self.consensus.append([self.local_step, self.consensus_distance()])

    @torch.no_grad()
    def _gossip(self) -> None:
        t = self.transport
        step = plan(self.config.topology, t.world_size, rank=t.rank, round_=self.rounds,
                    seed=0)  # fmt: skip
        self.rounds += 1
        if not step.send and not step.recv:
            return
        mine = self._flat()
        now = t.clock.now()
        body = mine.view(torch.uint8)
        h = wire.header(wire.PARAMS, clock=self.rounds, nbytes=body.numel(), time=now)
        sends = []
        try:
            for dst in step.send:
                sends.append(t.isend(h, dst, tag="control", channel=HEADER))
                sends.append(t.isend(body, dst, tag="train", channel=BODY))
            mixed = mine * step.self_weight
            for src in step.recv:
                hh = wire.empty_header()
                t.recv(hh, src=src, tag="control", channel=HEADER)
                t.clock.meet(wire.parse(hh).time)
                theirs = torch.empty_like(body)
                t.recv(theirs, src=src, tag="train", channel=BODY)
                mixed += theirs.view(torch.float32) * step.weights[src]
            for handle in sends:
                handle.wait()
        except CommError as exc:
            raise PeerFailedError(
                f"gossip round {self.rounds}: a neighbour of rank {t.rank} did not answer: {exc}",
                help="see that agent's log; a lost agent ends a gossip run",
            ) from exc
        self._write(mixed)

    @torch.no_grad()
    def consensus_distance(self) -> float:
        """``sqrt(mean_i ||x_i - x_bar||^2)`` over all agents (an ``eval`` all-reduce)."""
        t = self.transport
        if t.world_size == 1:
            return 0.0
        mine = self._flat()
        mean = t.all_reduce(mine.clone(), op="avg", tag="eval")
        sq = torch.tensor([float((mine - mean).pow(2).sum())], dtype=torch.float64)
        return float(t.all_reduce(sq, op="avg", tag="eval").sqrt().item())

    def finish(self) -> None:
        """One all-agent average (D-PSGD's output model): every agent ends identical."""
        if self.last_sync < self.local_step:
            self._gossip()
        if self.transport.world_size > 1 and self.params:
            flat = self._flat()
            self.aggregator.mean_(flat, tag="train")
            self._write(flat)

    def summary(self) -> dict[str, Any]:
        return {
            "gossip": {
                "topology": self.config.topology,
                "rounds": self.rounds,
                "consensus": self.consensus,
            }
        }

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rounds": self.rounds, "last_sync": self.last_sync,
                "consensus": list(self.consensus)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.rounds, self.last_sync = int(state["rounds"]), int(state["last_sync"])
        self.consensus = [list(x) for x in state["consensus"]]
