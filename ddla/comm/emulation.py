"""Link emulation: make every Transport op cost what it would on the configured links.

The Transport runs each op for real over loopback (so bytes, results and failures are real),
then :class:`LinkEmulator` charges the modelled link time of that op
(:func:`~ddla.comm.linkmodel.op_seconds`) on the run's clock. The link time is added after the
real op completes because a transfer on a real link can only start once every peer has arrived;
the real op's own time is then mostly waiting for stragglers, which a real link pays too.

Asynchronous ops (``all_reduce_async``) get a future that completes only when the modelled
transfer has finished: on the ``real`` clock a timer thread completes it after sleeping, so
computation really overlaps communication; on the ``virtual`` clock the time is charged when
the real op completes, as if the caller waited for it at once (a conservative model: virtual
runs do not credit overlap — use the ``real`` clock to measure it). Transfers share the link:
a transfer starts when the previous one has left it.

Background transfers (a communication thread's ops, :mod:`ddla.comm.background`) are charged by
a :class:`BackgroundLink`: the transfer is queued on the same link, its time recorded, and the
clock time it leaves the link kept as :attr:`BackgroundLink.arrival`; the agent's clock does not
move. On the ``real`` clock the communication thread sleeps that time itself, so the real
transfer, too, ends when the modelled one does. The agent pays only what is left when it needs
the result (:meth:`~ddla.comm.clock.Clock.wait_until`).

Example:
    >>> from ddla.comm.clock import VirtualClock
    >>> from ddla.comm.links import LinkTable
    >>> emu = LinkEmulator(LinkTable.build("wan-100", None, world_size=4), VirtualClock(), rank=0)
    >>> round(emu.charge("all_reduce", 4_000_000), 6)
    0.63
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from ddla.comm.clock import Clock, VirtualClock
from ddla.comm.linkmodel import op_seconds
from ddla.comm.links import LinkTable


class _LinkQueue:
    """One agent's link: transfers leave it one after the other."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.free_at = float("-inf")  # clock time the last queued transfer leaves the link


class LinkEmulator:
    """Charges modelled link time for one agent (``rank``) on ``clock``."""

    def __init__(self, table: LinkTable, clock: Clock, *, rank: int) -> None:
        self.table = table
        self.clock = clock
        self.rank = rank
        self._queue = _LinkQueue()

    def restricted(self, table: LinkTable, *, rank: int) -> LinkEmulator:
        """The emulator of a group of some agents (``table``, this agent's ``rank`` in it).

        It shares this agent's link queue and clock: a subgroup's transfers leave by the same
        link as the run's, one after the other.
        """
        emulator = LinkEmulator(table, self.clock, rank=rank)
        emulator._queue = self._queue
        return emulator

    @property
    def active(self) -> bool:
        """False when the links cost nothing (``lan``, or one agent): ops run untouched."""
        return self.table.shaped and self.table.world_size > 1

    def cost(
        self, op: str, nbytes: float, *, src: int | None = None, dst: int | None = None
    ) -> float:
        """Modelled seconds of ``op`` for this agent (no time passes)."""
        return op_seconds(op, nbytes, table=self.table, rank=self.rank, src=src, dst=dst)

    def _reserve(self, seconds: float) -> float:
        """Queue a transfer of ``seconds`` on the link; return the delay until it has left."""
        queue = self._queue
        with queue.lock:
            now = self.clock.now()
            queued = max(0.0, queue.free_at - now)
            queue.free_at = now + queued + seconds
        return queued + seconds

    def background(self) -> BackgroundLink:
        """This agent's emulator for a communication thread: same link queue and clock, but
        transfers occupy the link without moving the agent's clock."""
        emulator = BackgroundLink(self.table, self.clock, rank=self.rank)
        emulator._queue = self._queue
        return emulator

    def charge(
        self, op: str, nbytes: float, *, src: int | None = None, dst: int | None = None
    ) -> float:
        """After a blocking op: let its modelled time pass on the clock; return the seconds."""
        seconds = self.cost(op, nbytes, src=src, dst=dst)
        if seconds > 0:
            self.clock.advance(self._reserve(seconds))
        return seconds

    def wrap_future(
        self,
        future: torch.futures.Future[Any],
        op: str,
        nbytes: float,
        *,
        src: int | None = None,
        dst: int | None = None,
    ) -> torch.futures.Future[Any]:
        """A future that completes with ``future``'s value once the modelled transfer is done."""
        seconds = self.cost(op, nbytes, src=src, dst=dst)
        if seconds <= 0:
            return future
        out: torch.futures.Future[Any] = torch.futures.Future()

        def settle(done: torch.futures.Future[Any]) -> None:
            try:
                value = done.value()
            except Exception as exc:  # the real op failed: fail the emulated one at once
                out.set_exception(exc)
                return
            delay = self._reserve(seconds)
            if isinstance(self.clock, VirtualClock):
                self.clock.advance(delay)
                out.set_result(value)
                return
            self.clock.record(delay)  # the timer does the waiting, off the caller's thread
            timer = threading.Timer(delay, out.set_result, args=(value,))
            timer.daemon = True
            timer.start()

        future.add_done_callback(settle)
        return out


class BackgroundLink(LinkEmulator):
    """Charges a communication thread's transfers to the link, not to the agent's clock.

    Example (compute runs on a simulated local time; the transfer overlaps it):
        >>> from ddla.comm.links import LinkTable
        >>> local = [0.0]
        >>> clock = VirtualClock(local=lambda: local[0])
        >>> link = LinkEmulator(LinkTable.build("wan-100", None, world_size=4), clock, rank=0)
        >>> bg = link.background()
        >>> bg.not_before = clock.now()  # the communication thread sets it per job
        >>> round(bg.charge("all_reduce", 4_000_000), 6), round(bg.arrival, 6)  # 0.63 s queued
        (0.63, 0.63)
        >>> local[0] = 0.5  # half a second of compute meanwhile
        >>> round(clock.wait_until(bg.arrival), 6), round(clock.now(), 6)  # pay the remainder
        (0.13, 0.63)
    """

    def __init__(self, table: LinkTable, clock: Clock, *, rank: int) -> None:
        super().__init__(table, clock, rank=rank)
        #: Clock time at which the last transfer charged here leaves the link.
        self.arrival = float("-inf")
        #: Clock time the current job was submitted: its transfers start no earlier.
        self.not_before = float("-inf")

    def restricted(self, table: LinkTable, *, rank: int) -> LinkEmulator:
        emulator = BackgroundLink(table, self.clock, rank=rank)
        emulator._queue = self._queue
        return emulator

    def charge(
        self, op: str, nbytes: float, *, src: int | None = None, dst: int | None = None
    ) -> float:
        """Queue the op's modelled time on the link from :attr:`not_before` (or once the link
        is free); sleep until it arrives only on the ``real`` clock (this is the
        communication thread); remember the arrival. Returns the seconds."""
        seconds = self.cost(op, nbytes, src=src, dst=dst)
        if seconds <= 0:
            return seconds
        queue = self._queue
        with queue.lock:
            # The transfer left when the job was submitted (or when the link was free), not
            # when the loopback op returned: the training thread's clock may have moved on.
            begin = max(self.not_before, queue.free_at)
            queue.free_at = begin + seconds
        self.clock.record(seconds)
        self.arrival = max(self.arrival, begin + seconds)
        if self.clock.sleeps:
            self.clock.wait_until(self.arrival)
        return seconds
