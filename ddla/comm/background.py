"""Background communication: collectives that run while the agent keeps computing.

A :class:`BackgroundChannel` is a second process group over the same agents (a real
``torch.distributed.new_group``, made by :meth:`~ddla.comm.transport.Transport.subgroup`) and
one communication thread that runs jobs on it, first in, first out. Every agent submits the
same jobs in the same order, so the collectives on the second group match across agents, and
the training thread's own collectives (evaluation, control) on the first group never
interleave with them. The second group is a Transport like any other, so its ops pass through
the single seam: bytes are recorded exactly in the agent's account (tag ``train``), gloo gets
the Transport's timeout, and failures become the same DdlaErrors naming the peer. Two things
differ, because the agent is not waiting while they run:

- no seconds are recorded for the ops themselves; the training thread records the time it was
  actually blocked when it needs the result (op ``background_wait``), so ``comm_s`` is time
  lost to communication and compute time is not undercounted;
- emulated links charge the link, not the agent (:class:`~ddla.comm.emulation.BackgroundLink`):
  the transfer occupies the shared link queue for its modelled time, the ``real`` clock sleeps
  it on the communication thread, and :meth:`Pending.wait` waits on the clock only for what is
  left when the result is needed.

Costs (measured in docs/benchmarks.md, "Overlap"): the communication thread holds the GIL while
it compresses and decompresses and gloo's own threads copy the payload, both on the agent's
cores; on the ``virtual-cpu`` clock that CPU time is charged to the agent (it is process time).

Example (one agent has no peers: jobs run at once, on the calling Transport)::

    channel = BackgroundChannel(transport)          # every agent, same order
    pending = channel.submit(lambda t: t.all_reduce(grad, op="avg"), what="fragment 0")
    ...                                             # keep training
    mean = pending.wait()                           # blocks only if it has not arrived
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import torch

from ddla.errors import CommError, CommTimeoutError, DdlaError

if TYPE_CHECKING:
    from ddla.comm.transport import Transport

T = TypeVar("T")

#: Collectives one job may run (a compressed mean: up to three; buffers: one more). A job that
#: has run longer than this many timeouts is stuck even if no single call noticed.
_OPS_PER_JOB = 4
_POLL_S = 0.2


def _located(exc: BaseException, what: str) -> BaseException:
    """A DdlaError of the same type and hint that says it happened in a background transfer."""
    if not isinstance(exc, DdlaError):
        return exc
    located = type(exc)(f"{exc} (background transfer of {what})", help=exc.help)
    located.__cause__ = exc
    return located


class Pending(Generic[T]):
    """The result of one background job; :meth:`wait` when it is needed."""

    def __init__(self, channel: BackgroundChannel, what: str) -> None:
        self._channel = channel
        self.what = what
        self._done = threading.Event()
        self._started: float | None = None
        self._value: T | None = None
        self._error: BaseException | None = None
        #: Clock time its transfers leave the link (-inf without emulated links).
        self.arrival = float("-inf")
        #: Clock time it was submitted: its transfers start then, or once the link is free.
        self.submitted = float("-inf")
        #: With ``submit(..., future=True)``: a torch Future completed by the communication
        #: thread with the job's value (or its error, as :meth:`result` raises it), for
        #: callers that hand a future on (DDP communication hooks).
        self.future: torch.futures.Future[T] | None = None

    def done(self) -> bool:
        return self._done.is_set()

    def result(self) -> T:
        """Join the job (its error re-raised here), without waiting for its modelled arrival.

        Raises CommTimeoutError when the job has run past its bound (a few of the
        Transport's timeouts), so a stuck background transfer can never hang the agent.
        """
        limit = self._channel.job_timeout_s
        while not self._done.wait(_POLL_S):
            started = self._started
            if started is not None and time.monotonic() - started > limit:
                raise CommTimeoutError(
                    f"background transfer of {self.what} did not finish within {limit:g} s",
                    help="a peer stopped answering; check the other agents' logs "
                    "(comm.timeout_s bounds each call)",
                )
            if not self._channel.alive:
                raise CommError(f"background communication thread ended before {self.what}")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def wait(self, *, tag: str = "train") -> T:
        """The result, once it has arrived in modelled time too; records the seconds blocked.

        On the virtual clocks the agent's clock jumps to the arrival if compute did not cover
        the transfer; on the ``real`` clock the thread already slept it.
        """
        clock = self._channel.transport.clock
        began = clock.now()
        value = self.result()
        clock.wait_until(self.arrival)
        self._channel.record_wait(clock.now() - began, tag=tag)
        return value


class BackgroundChannel:
    """A second group over ``transport``'s agents, driven by one communication thread.

    Build it on every agent at the same point (group creation is collective), on the run-wide
    Transport. With one agent no group or thread is made: jobs run when submitted.
    """

    def __init__(self, transport: Transport) -> None:
        self.parent = transport
        self.job_timeout_s = _OPS_PER_JOB * transport.timeout_s + 1.0
        self._queue: queue.SimpleQueue[tuple[Callable[[Transport], object], Pending] | None]
        self._queue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        #: Seconds jobs spent running on the communication thread (wall clock).
        self.in_flight_s = 0.0
        if transport.world_size == 1:
            self.transport = transport
            return
        if not transport._run_wide:
            raise CommError(
                "background communication needs the run-wide Transport (it makes a new group "
                "of every agent)",
                help="build the BackgroundChannel on the Transport of the whole run",
            )
        made = transport.subgroup(list(range(transport.world_size)))
        assert made is not None  # every agent is a member
        made._background = True
        if made._links is not None:
            made._links = made._links.background()
        self.transport = made
        self._thread = threading.Thread(target=self._serve, name="ddla-comm", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def submit(
        self, fn: Callable[[Transport], T], *, what: str, future: bool = False
    ) -> Pending[T]:
        """Queue ``fn(transport)`` (collectives on the second group); returns at once.

        With ``future`` the :class:`Pending` also carries a torch Future (``pending.future``)
        that the communication thread completes as soon as the job ends.
        """
        pending: Pending[T] = Pending(self, what)
        pending.submitted = self.transport.clock.now()
        if future:
            pending.future = torch.futures.Future()
        if self._thread is None:
            self._execute(fn, pending)
        else:
            self._queue.put((fn, pending))
        return pending

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            self._execute(*item)

    def _execute(self, fn: Callable[[Transport], object], pending: Pending) -> None:
        links = self.transport._links
        if links is not None:
            links.not_before = pending.submitted  # type: ignore[attr-defined]
        began = pending._started = time.monotonic()
        try:
            pending._value = fn(self.transport)
        except BaseException as exc:  # handed to the training thread, which raises it
            pending._error = _located(exc, pending.what)
        if links is not None and self._thread is not None:
            pending.arrival = links.arrival  # type: ignore[attr-defined]
        self.in_flight_s += time.monotonic() - began
        pending._done.set()
        if pending.future is not None:
            if pending._error is not None:
                pending.future.set_exception(pending._error)
            else:
                pending.future.set_result(pending._value)

    def record_wait(self, seconds: float, *, tag: str = "train") -> None:
        """Seconds the training thread was blocked on a result (0 bytes, one call)."""
        self.parent.stats.record("background_wait", tag, 0, 0, max(seconds, 0.0))

    def close(self) -> None:
        """Stop the thread after the jobs queued so far (it is a daemon: never blocks exit)."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
