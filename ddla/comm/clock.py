"""Clocks for link emulation: ``real`` sleeps, ``virtual`` only keeps count.

The clocks read like ``time.monotonic()`` plus the modelled link time spent so far. A
:class:`RealClock` pays modelled time by sleeping, so wall-clock figures are true and overlap of
communication with computation happens for real. A :class:`VirtualClock` adds it to an offset
without sleeping, so a sweep of slow links runs at the speed of the local machine; its readings
are simulated wall-clock time (real compute time + modelled link time). Every output that
reports time carries the clock's ``label`` so they are never confused. A :class:`CpuClock`
(``virtual-cpu``) is a virtual clock whose local time is CPU time, as if each agent had a
dedicated core: the figures of a dedicated machine, measured on a shared one.

Overlap (background transfers, :mod:`ddla.comm.background`): a transfer that runs while the
agent computes occupies the link, not the agent. Its modelled time is *recorded*
(:meth:`Clock.record`) when it is queued on the link, and the agent pays only the part not yet
over when it needs the result: :meth:`Clock.wait_until` the transfer's arrival time. On the
``real`` clock the communication thread sleeps the link time itself, so the agent's wait is
whatever is left of it; on the virtual clocks the offset jumps to the arrival, or not at all
when compute already took longer.

Example:
    >>> clock = VirtualClock()
    >>> t0 = clock.now()
    >>> clock.advance(3600.0)  # an hour on the simulated link, instantly
    >>> clock.now() - t0 >= 3600.0, clock.modelled_s
    (True, 3600.0)
    >>> sim = VirtualClock(local=lambda: 0.0)  # a frozen local time: only modelled time passes
    >>> sim.wait_until(2.5), sim.wait_until(1.0), sim.now()
    (2.5, 0.0, 2.5)
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar


class Clock(ABC):
    """Monotonic seconds plus modelled link time; subclasses decide how that time passes."""

    label: ClassVar[str] = "clock"
    #: Whether this clock's readings must be re-synchronized where agents meet (collectives,
    #: timestamped messages): a virtual clock does not see the time it spends blocked.
    synchronizes: ClassVar[bool] = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._modelled = 0.0
        self._waited = 0.0

    @property
    def waited_s(self) -> float:
        """Seconds :meth:`wait_until` let pass: on virtual clocks, the modelled time this agent
        waited for a slower peer or a transfer compute did not cover (on the ``real`` clock a
        wait for a peer is real time blocked in the backend, not counted here)."""
        return self._waited

    def spend(self, seconds: float) -> None:
        """Let ``seconds`` of computation pass (a straggler's extra compute, ``fault.slow``).

        Every clock sleeps them, so that the order in which agents reach a server or a peer
        follows the model; a :class:`CpuClock`, which does not count sleeping, also adds them
        to its reading."""
        if seconds > 0:
            time.sleep(seconds)

    @property
    def modelled_s(self) -> float:
        """Total modelled link seconds this clock has been advanced by."""
        return self._modelled

    def now(self) -> float:
        """Seconds on this clock (monotonic; only differences are meaningful)."""
        return time.monotonic()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of modelled link time pass."""
        if seconds > 0:
            self.record(seconds)
            self._pass(seconds)

    def record(self, seconds: float) -> None:
        """Count ``seconds`` of modelled link time that pass elsewhere (a timer thread)."""
        with self._lock:
            self._modelled += seconds

    def wait_until(self, at: float) -> float:
        """Block (in modelled time) until this clock reads ``at``; return the seconds waited.

        For results of background transfers: ``at`` is when the transfer leaves the link. No
        link time is recorded here (it was when the transfer was queued); 0 when ``at`` has
        passed, i.e. compute covered the transfer. Also where agents meet on a virtual clock:
        ``at`` is a peer's reading (a collective's latest arrival, a timestamped message).
        """
        waited = at - self.now()
        if waited <= 0:
            return 0.0
        self._pass(waited)
        with self._lock:
            self._waited += waited
        return waited

    def meet(self, at: float) -> float:
        """Where this agent meets a peer whose clock read ``at`` (a timestamped message from a
        parameter server or a gossip neighbour): a synchronizing (virtual) clock waits until
        then (:meth:`wait_until`); the ``real`` clock already waited for real while it blocked
        on the message, and another host's monotonic reading means nothing here, so 0.
        """
        return self.wait_until(at) if self.synchronizes else 0.0

    @abstractmethod
    def _pass(self, seconds: float) -> None:
        """Make ``seconds`` pass on this clock (sleep, or move the offset)."""

    @property
    def sleeps(self) -> bool:
        """Whether modelled time passes by sleeping the calling thread (the ``real`` clock)."""
        return False


class RealClock(Clock):
    """Modelled time passes by sleeping: wall-clock time is true time."""

    label: ClassVar[str] = "real"

    @property
    def sleeps(self) -> bool:
        return True

    def _pass(self, seconds: float) -> None:
        # time.sleep may wake a little early on some platforms; finish the remainder so a
        # transfer never costs less than its model (the test holds it to within 10%).
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(left)


class VirtualClock(Clock):
    """Modelled time passes instantly: ``now()`` is real time plus the modelled time so far."""

    label: ClassVar[str] = "virtual"
    synchronizes: ClassVar[bool] = True
    #: Where local (compute) time comes from; ``virtual-cpu`` reads CPU time instead.
    _source: ClassVar[Callable[[], float]] = staticmethod(time.monotonic)

    def __init__(self, *, local: Callable[[], float] | None = None) -> None:
        """``local`` replaces the local time source (e.g. a test's simulated compute time)."""
        super().__init__()
        self._offset = 0.0
        self._local = local if local is not None else type(self)._source

    def now(self) -> float:
        return self._local() + self._offset

    def _pass(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


class CpuClock(VirtualClock):
    """Like :class:`VirtualClock`, but local time is this process's CPU time.

    It models each agent on a dedicated core: time an agent spends descheduled because the
    machine is shared (several agents and other jobs on few cores) or blocked waiting for a
    slower peer does not count, so sweeps on a busy machine give the figures of a dedicated
    one. Where agents meet, clocks are re-synchronized: a training collective starts at the
    latest member's reading (``Transport._sync_clocks``) and a timestamped message
    (parameter server, gossip) arrives no earlier than it was sent, so a slower agent's delay
    (``fault.slow``) is seen by its peers as waiting (:attr:`waited_s`).
    """

    label: ClassVar[str] = "virtual-cpu"
    _source: ClassVar[Callable[[], float]] = staticmethod(time.process_time)

    def spend(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)  # for the order of arrivals; CPU time does not count it
            with self._lock:
                self._offset += seconds


#: Clock names accepted by ``comm.clock``.
CLOCKS: dict[str, type[Clock]] = {
    "real": RealClock,
    "virtual": VirtualClock,
    "virtual-cpu": CpuClock,
}


def make_clock(name: str) -> Clock:
    """A fresh clock by name (``real`` or ``virtual``); names are validated by CommConfig."""
    return CLOCKS[name]()
