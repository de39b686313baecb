"""Where an agent's time goes: compute, communication, time inside training steps, wall.

Communication time (``comm_s``, seconds inside ``train`` Transport calls) splits into the
modelled link time (``link_s``: transfers on the emulated links) and waiting (``wait_s``: the
rest, time blocked until a slower peer arrived or a server answered). On a virtual clock the
waiting is what the clock was moved forward to a later peer's reading; on the real clock it is
real time blocked. ``fault.slow`` makes one agent's compute slower, so the split shows who waits
for whom.

Example:
    >>> from ddla.comm import Transport
    >>> timer = AgentTimer(Transport.single())
    >>> timer.begin_step(); timer.end_step()
    >>> sorted(timer.state_dict())
    ['compute_s', 'train_cpu_s', 'train_s', 'wall_s']
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ddla.comm import Transport


class AgentTimer:
    """Accumulates this agent's compute and communication seconds (restored on resume)."""

    def __init__(self, transport: Transport, state: dict[str, float] | None = None) -> None:
        self.transport = transport
        self.compute_s = 0.0
        self.train_s = 0.0  # seconds inside training steps (forward, backward, sync, update)
        # CPU seconds of this process inside training steps: unlike wall time, not inflated
        # when a shared machine deschedules the agent (benchmarks compare overhead with it).
        self.train_cpu_s = 0.0
        self.wall_offset = 0.0
        if state:
            self.compute_s, self.wall_offset = state["compute_s"], state["wall_s"]
            self.train_s, self.train_cpu_s = state["train_s"], state["train_cpu_s"]
        self._step_start = (0.0, 0.0, 0.0)
        # The Transport's clock: real time, or real + modelled link time (virtual clock).
        self.start = transport.clock.now()

    def comm_s(self) -> float:
        return float(self.transport.stats.totals("train")["seconds"])

    def link_s(self) -> float:
        """Modelled link seconds of this agent's transfers (0 without emulated links)."""
        return float(self.transport.clock.modelled_s)

    def wait_s(self) -> float:
        """Seconds of communication that were not link time: waiting for peers."""
        return max(self.comm_s() - self.link_s(), 0.0)

    def wall_s(self) -> float:
        return self.wall_offset + self.transport.clock.now() - self.start

    def begin_step(self) -> None:
        self._step_start = (self.transport.clock.now(), self.comm_s(), time.process_time())

    def end_step(self) -> None:
        t0, c0, p0 = self._step_start
        step_seconds = self.transport.clock.now() - t0
        # DDP overlaps communication with backward; comm seconds are time in flight, so the
        # compute share is what is left of the step (never negative).
        self.compute_s += max(step_seconds - (self.comm_s() - c0), 0.0)
        self.train_s += step_seconds
        self.train_cpu_s += time.process_time() - p0

    def state_dict(self) -> dict[str, float]:
        return {
            "compute_s": self.compute_s,
            "train_s": self.train_s,
            "train_cpu_s": self.train_cpu_s,
            "wall_s": self.wall_s(),
        }
