"""The Transport's point-to-point transfers: blocking ``send``/``recv``, non-blocking
``isend``/``irecv`` with waitable handles, and any-source receive for a server role.

A mixin of :class:`~ddla.comm.transport.Transport`. Every transfer passes through the
Transport's seam ``_run`` when it completes, so a non-blocking one is accounted exactly like a
blocking one: ``B`` bytes sent by the sender and received by the receiver (the ring model of
:mod:`ddla.comm.ring`), the seconds its ``wait`` blocked, and with emulated links its modelled
link time on the clock (charged in full at ``wait``, as if the caller waited at once: a
conservative model that, like ``all_reduce_async`` on the virtual clock, credits no overlap).

Timeouts: ``Work.wait(timeout)`` on a gloo send/recv is gloo's own buffer wait, a real timeout
(measured, torch 2.13); an expired wait raises :class:`~ddla.errors.CommTimeoutError` naming the
op, tag, peer and limit, and a peer that died raises :class:`~ddla.errors.PeerFailedError`.

``channel`` is the backend's message tag (an integer): a send matches only a receive on the same
channel, so a server can keep, say, gradients and control messages apart. ``tag`` is the
accounting tag (``train``, ``eval``, ``control``, ``data``) as everywhere else.

Example (a parameter server: rank 0 takes updates from whichever worker is first)::

    if transport.rank == 0:
        inbox = torch.empty(n)
        handle = transport.irecv(inbox)            # any source
        handle.wait(timeout_s=30)
        print("update from rank", handle.source)
    else:
        transport.isend(update, dst=0).wait()
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch

from ddla.comm.collectives import _Measured, _nbytes
from ddla.comm.ring import ring_bytes
from ddla.errors import CommError

if TYPE_CHECKING:
    from ddla.comm.transport import Transport


class P2PWork:
    """A pending ``isend``/``irecv``; :meth:`wait` completes it (once) and accounts it.

    ``source`` is the rank the message came from (known after ``wait``; for a receive from a
    named ``src`` it is that rank from the start). The tensor must not be touched until ``wait``
    returns.
    """

    def __init__(
        self,
        transport: Transport,
        work: Any,
        *,
        op: str,
        tensor: torch.Tensor,
        tag: str,
        peer: int | None,
        timeout_s: float,
    ) -> None:
        self._transport = transport
        self._work = work
        self.op = op
        self.tensor = tensor
        self.tag = tag
        self.timeout_s = timeout_s
        self.source: int | None = peer if op == "recv" else transport.rank
        self._peer = peer
        self._done = False

    @property
    def peer(self) -> int | None:
        """The other end: ``dst`` of a send, ``src`` of a receive (None: any source, not yet)."""
        return self._peer

    def is_completed(self) -> bool:
        """Whether the transfer has finished (:meth:`wait` will not block)."""
        return self._done or self._work is None or bool(self._work.is_completed())

    def wait(self, timeout_s: float | None = None) -> torch.Tensor:
        """Block until the transfer is done (at most ``timeout_s``, default the one given at
        launch); return the tensor. Accounted on the first call; later calls return at once.

        Raises:
            CommTimeoutError: not done in time (the message names op, tag, peer and limit).
            PeerFailedError: the peer died.
        """
        if self._done:
            return self.tensor
        t = self._transport
        limit = self.timeout_s if timeout_s is None else t._limit(timeout_s)
        nbytes = _nbytes(self.tensor)
        any_source = self.op == "recv" and self._peer is None
        where = f"any rank of {t._group_name()}" if any_source else None

        def body() -> _Measured:
            if self._work is not None:
                self._work.wait(timedelta(seconds=limit))
            source = self._peer
            if any_source:
                source = int(self._work.source_rank())
            sent, received = ring_bytes(self.op, nbytes, t.world_size, t.rank)
            return _Measured(self.tensor, sent, received, peer=source)

        t._run(
            self.op, self.tag, 0, 0, body, timeout_s=limit, peer=self._peer, where=where,
            nbytes=nbytes,
        )  # fmt: skip
        if any_source:
            self._peer = self.source = int(self._work.source_rank())
        self._done = True
        return self.tensor

    def __repr__(self) -> str:
        state = "done" if self._done else "pending"
        return f"P2PWork({self.op}, peer={self._peer}, tag={self.tag!r}, {state})"


class PointToPoint:
    """Point-to-point transfers over the Transport's group (see :class:`Transport`)."""

    # Provided by Transport.
    rank: int
    world_size: int
    _pg: Any
    _closed: bool
    _closed_why: tuple[str, str]
    _run: Callable[..., Any]
    _limit: Callable[[float | None], float]

    def _check_peer(self, op: str, peer: int, name: str) -> None:
        if not 0 <= peer < self.world_size or peer == self.rank:
            raise ValueError(
                f"{op}: {name}={peer} must be another rank in 0..{self.world_size - 1} "
                f"(this agent is rank {self.rank})"
            )

    def send(
        self,
        tensor: torch.Tensor,
        *,
        dst: int,
        tag: str = "train",
        timeout_s: float | None = None,
        channel: int = 0,
    ) -> None:
        """Send ``tensor`` to rank ``dst``; returns once the backend has sent it."""
        self.isend(tensor, dst=dst, tag=tag, timeout_s=timeout_s, channel=channel).wait()

    def recv(
        self,
        tensor: torch.Tensor,
        *,
        src: int,
        tag: str = "train",
        timeout_s: float | None = None,
        channel: int = 0,
    ) -> torch.Tensor:
        """Receive into ``tensor`` (right shape and dtype) from rank ``src``; returns it."""
        return self.irecv(tensor, src=src, tag=tag, timeout_s=timeout_s, channel=channel).wait()

    def isend(
        self,
        tensor: torch.Tensor,
        dst: int,
        *,
        tag: str = "train",
        timeout_s: float | None = None,
        channel: int = 0,
    ) -> P2PWork:
        """Start sending ``tensor`` to rank ``dst``; ``wait()`` the handle before reusing it.

        Example::

            handle = transport.isend(torch.ones(4), dst=1)
            ...                                   # compute while it travels
            handle.wait(timeout_s=10)
        """
        self._check_peer("send", dst, "dst")
        return self._start("send", tensor, dst, tag, timeout_s, channel)

    def irecv(
        self,
        tensor: torch.Tensor,
        src: int | None = None,
        *,
        tag: str = "train",
        timeout_s: float | None = None,
        channel: int = 0,
    ) -> P2PWork:
        """Start receiving into ``tensor`` from rank ``src``, or (``src=None``) from whichever
        rank sends first on ``channel``; after ``wait()``, ``handle.source`` says which.

        Example::

            handle = transport.irecv(torch.empty(4))  # a server: any worker
            handle.wait()
            handle.source                             # e.g. 2
        """
        if src is not None:
            self._check_peer("recv", src, "src")
        elif self.world_size < 2:
            raise ValueError("irecv: any-source receive needs another agent (world size 1)")
        return self._start("recv", tensor, src, tag, timeout_s, channel)

    def _start(
        self,
        op: str,
        tensor: torch.Tensor,
        peer: int | None,
        tag: str,
        timeout_s: float | None,
        channel: int,
    ) -> P2PWork:
        if self._closed:
            note, hint = self._closed_why
            raise CommError(f"{op} called on a closed Transport{note}", help=hint)
        if not tensor.is_contiguous():
            raise ValueError(f"{op}: the tensor must be contiguous")
        limit = self._limit(timeout_s)
        transport: Transport = self  # type: ignore[assignment]
        try:
            if op == "send":
                work = self._pg.send([tensor], peer, channel)
            elif peer is None:
                work = self._pg.recv_anysource([tensor], channel)
            else:
                work = self._pg.recv([tensor], peer, channel)
        except RuntimeError as exc:  # the backend refused at once (a closed connection)
            raise transport._failure(exc, op, tag, limit, peer=peer) from exc
        return P2PWork(transport, work, op=op, tensor=tensor, tag=tag, peer=peer, timeout_s=limit)
