"""A straggler: one agent whose computation is FACTOR times slower (``fault.slow=RANK:FACTOR``).

Data centers differ in speed; every synchronous strategy then moves at the pace of the slowest
agent, and asynchronous ones (``param_server``, ``gossip``) let the others go on. This wraps a
:class:`~ddla.compute.Compute`: after each step it measures the step's compute time (the step's
seconds on the agent's clock minus its seconds inside ``train`` communication) and lets
``(FACTOR - 1)`` times that pass on the clock (:meth:`ddla.comm.clock.Clock.spend`): the
``real`` clock sleeps, ``virtual`` counts the sleep, ``virtual-cpu`` adds it to its CPU-time
reading (and sleeps too, so the order in which agents reach a server or a peer follows the
model). Peers see the delay as waiting: collectives start at the latest agent's reading and
timestamped messages arrive no earlier than sent (:mod:`ddla.comm.clock`).

Example:
    >>> import torch
    >>> from ddla.comm import Transport
    >>> from ddla.compute import Replica
    >>> from ddla.sync import SyncConfig, build_strategy
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with Transport.single().emulate_links("lan", clock="virtual-cpu") as t:
    ...     s = build_strategy(SyncConfig(), transport=t, model=model, optimizer=opt)
    ...     step = Replica(strategy=s, optimizer=opt, loss=torch.nn.functional.mse_loss,
    ...                    batch=lambda i: (torch.randn(64, 4), torch.randn(64, 2)))
    ...     slow = Slowed(step, factor=3.0, transport=t)
    ...     _ = slow(0)
    >>> slow.extra_s > 0
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ddla.compute.base import Compute

if TYPE_CHECKING:
    import torch

    from ddla.comm import Transport


class Slowed(Compute):
    """``inner``'s steps, each followed by ``(factor - 1)`` times its compute time."""

    name = "slowed"

    def __init__(self, inner: Compute, *, factor: float, transport: Transport) -> None:
        self.inner, self.factor, self.transport = inner, float(factor), transport
        #: Seconds of extra compute this agent has spent so far.
        self.extra_s = 0.0

    @property
    def model(self) -> torch.nn.Module:
        return self.inner.model

    def _comm_s(self) -> float:
        return float(self.transport.stats.totals("train")["seconds"])

    def __call__(self, step: int) -> torch.Tensor:
        clock = self.transport.clock
        t0, c0 = clock.now(), self._comm_s()
        loss = self.inner(step)
        compute = max((clock.now() - t0) - (self._comm_s() - c0), 0.0)
        extra = (self.factor - 1.0) * compute
        clock.spend(extra)
        self.extra_s += extra
        return loss

    def summary(self) -> dict[str, Any]:
        return self.inner.summary()

    def agent_stats(self) -> dict[str, Any]:
        return self.inner.agent_stats()

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)
