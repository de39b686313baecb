"""The Transport: every byte between agents goes through here.

A Transport wraps one torch.distributed process group (gloo on CPU, NCCL on GPU) and adds what
raw c10d calls lack: a timeout on every blocking call that raises a DdlaError naming the op, the
tag and the peer; exact byte accounting per op and tag (:mod:`ddla.comm.ring`); and the wall
seconds spent in each call (:class:`~ddla.comm.stats.CommStats`). Strategies talk to peers
through it alone, so accounting and link emulation see all traffic.

Its ops live in one file per concept, as mixins of :class:`Transport`, and every one of them
passes through the single seam ``_run`` here (timeouts mapped to DdlaErrors, bytes and seconds
recorded, link time charged): collectives (:mod:`ddla.comm.collectives`), point-to-point with
non-blocking handles and any-source receive (:mod:`ddla.comm.p2p`), subgroups
(:mod:`ddla.comm.subgroup`) and a new membership after an agent is gone
(:mod:`ddla.comm.membership`).

How timeouts work (measured with gloo, torch 2.13): collectives are issued through the process
group's own methods with ``timeout=``, so gloo itself abandons the operation, closes the
connection and frees its worker thread. ``Work.wait(timeout)`` alone is not enough: it raises
on time, but the collective keeps running on gloo's thread until the *group's* timeout, and
``destroy_process_group`` blocks until then. Point-to-point ``Work.wait(timeout)`` is gloo's
own buffer wait and needs nothing more. A connection closed by a timeout stays closed: a
Transport whose call timed out cannot talk to that peer again.

Example (one agent; with more, start agents under ``torchrun`` or ``ddla.testing.run_agents``):
    >>> import torch
    >>> transport = Transport.single()
    >>> transport.all_reduce(torch.ones(3), op="avg")
    tensor([1., 1., 1.])
    >>> transport.stats.totals()
    {'calls': 1, 'bytes_sent': 0, 'bytes_received': 0, 'seconds': ...}
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import torch
import torch.distributed as dist

from ddla.comm.clock import Clock, RealClock, make_clock
from ddla.comm.collectives import _WAIT_GRACE_S, Collectives, _Measured
from ddla.comm.emulation import LinkEmulator
from ddla.comm.failures import comm_failure
from ddla.comm.join import join_env_group
from ddla.comm.links import LinkTable
from ddla.comm.membership import Membership
from ddla.comm.p2p import PointToPoint
from ddla.comm.ring import ring_bytes
from ddla.comm.stats import CommStats
from ddla.comm.subgroup import Lineage, Subgroups
from ddla.errors import CommError, ConfigError, DdlaError

if TYPE_CHECKING:
    from ddla.profile.spans import SpanRecord, Spans

T = TypeVar("T")

#: Collectives whose members meet (their clocks are re-synchronized, see ``_sync_clocks``).
_MEETING_OPS = frozenset(
    {"all_reduce", "all_gather", "all_to_all", "all_gather_object", "broadcast"}
)


class _Start(NamedTuple):
    """What the seam's first half hands its second: the clock reading and the open span."""

    at: float
    span: SpanRecord | None


def _check_timeout(timeout_s: float) -> float:
    if not timeout_s > 0:
        raise ConfigError(
            f"communication timeout must be > 0 seconds, got {timeout_s!r}",
            help="set a positive timeout_s, e.g. 60",
        )
    return float(timeout_s)


class Transport(Collectives, PointToPoint, Subgroups, Membership):
    """Collectives and point-to-point transfers with timeouts and byte accounting.

    Build one with :meth:`from_env` (agents started by ``torchrun`` or ``ddla run``), around an
    existing group with ``Transport(group=...)``, or with :meth:`single` for one agent.
    Tensors must be contiguous and live on the backend's device (CPU for gloo).

    A Transport made by :meth:`subgroup` or :meth:`regroup` is one too: its ``rank`` and
    ``world_size`` are those of the smaller group, :attr:`global_ranks` maps them back to the
    ranks of the run, and it shares the parent's :attr:`stats`, clock and emulated links.
    """

    def __init__(self, *, group: Any = None, timeout_s: float = 60.0, store: Any = None) -> None:
        """Wrap an initialized process group (the default group when ``group`` is None).

        ``store`` is the c10d Store for control messages; :meth:`from_env` passes its own.
        """
        if not dist.is_available() or not dist.is_initialized():
            raise CommError(
                "torch.distributed is not initialized, so there is no process group to wrap",
                help="use Transport.from_env() under torchrun/ddla run, or Transport.single()",
            )
        pg = dist.group.WORLD if group is None else group
        if pg is None or pg == dist.GroupMember.NON_GROUP_MEMBER:
            raise CommError(
                "this process is not a member of the given process group",
                help="build the Transport only on ranks that belong to the group",
            )
        self._setup(
            pg=pg,
            rank=dist.get_rank(group=pg),
            world_size=dist.get_world_size(group=pg),
            backend=str(dist.get_backend(pg)),
            timeout_s=timeout_s,
            store=store,
            global_ranks=dist.get_process_group_ranks(pg),
        )

    def _setup(self, *, pg, rank, world_size, backend, timeout_s, store, global_ranks) -> None:
        self._pg = pg
        self.rank: int = rank
        self.world_size: int = world_size
        self.backend: str = backend
        self.timeout_s: float = _check_timeout(timeout_s)
        self.stats = CommStats()
        self._store = store
        self._global_ranks = list(global_ranks)
        self._owns_group = False
        self._closed = False
        #: What a call on the closed Transport says: a note on why, and a help hint.
        self._closed_why = ("", "build a new Transport")
        #: Whether this Transport spans every live agent of the run (the world, or the
        #: survivors after a regroup): only such a one may create groups, see subgroup.py.
        self._run_wide = pg is None or pg == dist.group.WORLD
        #: Agreed group counters, shared by a run-wide Transport and what it regroups into.
        self._lineage = Lineage()
        #: The run's ranks of agents that left through regroup(), in order of leaving.
        self.departed: tuple[int, ...] = ()
        #: The clock every op is timed on; ``real`` unless :meth:`emulate_links` says otherwise.
        self.clock: Clock = RealClock()
        self._links: LinkEmulator | None = None
        self._table: LinkTable | None = None
        self._link_tags: frozenset[str] = frozenset()
        #: ddla's profiler spans while a run profiles (:mod:`ddla.profile`); None: no spans.
        self.spans: Spans | None = None
        #: A communication thread's Transport (:mod:`ddla.comm.background`): its ops record
        #: bytes but no seconds (the agent kept computing) and charge links in the background.
        self._background = False

    def emulate_links(
        self,
        link: str | LinkTable = "lan",
        overrides: str = "",
        *,
        clock: str | Clock = "real",
        tags: tuple[str, ...] = ("train",),
    ) -> Transport:
        """Make every op also cost its modelled time on emulated links (:mod:`ddla.comm.links`).

        ``link`` is a profile name or ``RATE:DELAY`` spec (or a ready :class:`LinkTable`),
        ``overrides`` puts agents behind other links (``"3=edge"``), ``clock`` is ``real``
        (sleep) or ``virtual`` (count without sleeping), or a ready :class:`Clock` (e.g. a
        ``VirtualClock(local=...)`` whose compute time a test controls).
        Call once, before training starts.
        Only ops with a tag in ``tags`` pay link time: by default training traffic, not the
        evaluation harness (``eval``) that a real deployment would not run every few steps.

        Example:
            >>> import torch
            >>> t = Transport.single().emulate_links("wan-100", clock="virtual")
            >>> t.clock.label, t.link_description
            ('virtual', 'wan-100')
        """
        table = (
            link
            if isinstance(link, LinkTable)
            else LinkTable.build(link, overrides, world_size=self.world_size)
        )
        if table.world_size != self.world_size:
            raise ConfigError(
                f"link table is for {table.world_size} agents, this run has {self.world_size}",
                help="build the LinkTable with world_size=transport.world_size",
            )
        self.clock = clock if isinstance(clock, Clock) else make_clock(clock)
        emulator = LinkEmulator(table, self.clock, rank=self.rank)
        self._links = emulator if emulator.active else None
        self._table = table
        self._link_tags = frozenset(tags)
        return self

    @property
    def link_description(self) -> str:
        """The emulated links in one line (``lan`` when none), for logs and summaries."""
        return self._table.describe() if self._table is not None else "lan"

    @classmethod
    def single(cls, *, timeout_s: float = 60.0) -> Transport:
        """A world of one agent without any process group: every op is local, 0 bytes."""
        transport = cls.__new__(cls)
        transport._setup(
            pg=None,
            rank=0,
            world_size=1,
            backend="none",
            timeout_s=timeout_s,
            store=dist.HashStore(),
            global_ranks=[0],
        )
        return transport

    @classmethod
    def from_env(cls, *, backend: str = "auto", timeout_s: float = 60.0) -> Transport:
        """Join the run described by RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (env://).

        ``backend="auto"`` picks NCCL when CUDA is available, else gloo. The group's own
        timeout (rendezvous, store) is ``timeout_s`` too. :meth:`close` destroys the group.
        """
        timeout_s = _check_timeout(timeout_s)
        store = join_env_group(backend, timeout_s)
        transport = cls(timeout_s=timeout_s, store=store)
        transport._owns_group = True
        return transport

    @property
    def group(self) -> Any:
        """The wrapped process group (for PyTorch wrappers such as DDP); None for one agent."""
        return self._pg

    @property
    def store(self) -> Any:
        """The c10d Store for control messages (membership, heartbeats, handshakes)."""
        if self._store is None:
            raise CommError(
                "this Transport was built without a store",
                help="pass store= to Transport(...), or build it with Transport.from_env()",
            )
        return self._store

    # ---- the seam: every op funnels through _run ------------------------------------------

    def _run(
        self,
        op: str,
        tag: str,
        sent: int,
        received: int,
        fn: Callable[[], T],
        *,
        timeout_s: float,
        peer: int | None = None,
        nbytes: int = 0,
        root: int | None = None,
        where: str | None = None,
        charge: bool = True,
    ) -> T:
        """Run one op body, map its failure to a DdlaError, record bytes and wall seconds.

        This is the single place every op passes through: blocking ops call it with their
        body, non-blocking ones (``all_reduce_async``, ``isend``/``irecv`` handles) through its
        two halves :meth:`_begin` and :meth:`_end`. Failed calls are not recorded: their bytes
        are unknown.

        With emulated links, the op's modelled link time (``nbytes`` is the payload on this
        agent, ``root`` a broadcast's source, ``peer`` a send/recv's other end) passes on
        :attr:`clock` after the real op, and is part of the recorded seconds. ``where`` names
        the other side in errors (default: ``peer``'s rank, else the group); ``charge=False``
        for ops that move no payload the link model knows (group creation).
        """
        start = self._begin(op)
        try:
            if op in _MEETING_OPS:
                self._sync_clocks(tag, timeout_s)
            result = fn()
        except BaseException as exc:
            if start.span is not None:  # a failed call closes its profiler span too
                self.spans.end(start.span, tag=tag, error=type(exc).__name__)  # type: ignore[union-attr]
            if isinstance(exc, RuntimeError) and not isinstance(exc, DdlaError):
                # includes torch.distributed.DistError subclasses
                raise self._failure(exc, op, tag, timeout_s, peer=peer, where=where) from exc
            raise
        if isinstance(result, _Measured):
            if result.peer is not None:
                peer = result.peer
            result, sent, received = result.result, result.sent, result.received
        self._end(
            op, tag, sent, received, start, nbytes=nbytes, peer=peer, root=root, charge=charge
        )
        return result

    def _sync_clocks(self, tag: str, timeout_s: float) -> None:
        """On a virtual clock, start a training collective at the latest agent's reading.

        A collective cannot start before its last member arrives; a virtual clock does not see
        the time it blocked waiting for that member (a ``virtual-cpu`` clock counts CPU time
        only, and a straggler's extra compute is modelled, ``fault.slow``), so the members
        agree on the latest reading (one 8-byte max all-reduce, not counted: it is the
        simulation's bookkeeping, not the algorithm's traffic) and the earlier ones wait
        until then (:attr:`Clock.waited_s`). Only ops of the emulated tags (``train``).
        """
        if self.world_size < 2 or not self.clock.synchronizes or tag not in self._link_tags:
            return
        if self._background:
            # A background transfer must not move the training thread's clock: its arrival is
            # modelled by BackgroundLink and waited for in Pending.wait (comm/background.py).
            return
        reading = torch.tensor([self.clock.now()], dtype=torch.float64)
        work = self._pg.allreduce(
            reading, op=dist.ReduceOp.MAX, timeout=timedelta(seconds=timeout_s)
        )
        self._wait(work, timeout_s)
        self.clock.wait_until(float(reading.item()))

    def _begin(self, op: str) -> _Start:
        """First half of the seam: refuse a closed Transport, read the clock, and while a
        profile records (:attr:`spans`), open the op's ``ddla.comm.<op>`` span."""
        if self._closed:
            note, hint = self._closed_why
            raise CommError(f"{op} called on a closed Transport{note}", help=hint)
        spans = self.spans
        return _Start(
            self.clock.now(),
            None if spans is None else spans.begin(f"ddla.comm.{op}", op=op),
        )

    def _failure(
        self,
        exc: BaseException,
        op: str,
        tag: str,
        timeout_s: float,
        *,
        peer: int | None = None,
        where: str | None = None,
    ) -> DdlaError:
        """The DdlaError for backend failure ``exc`` of ``op``, naming the peer or the group."""
        if where is None:
            where = self._peer_name(peer) if peer is not None else self._group_name()
        return comm_failure(exc, op=op, tag=tag, where=where, timeout_s=timeout_s)

    def _end(
        self,
        op: str,
        tag: str,
        sent: int,
        received: int,
        start: _Start,
        *,
        nbytes: int = 0,
        peer: int | None = None,
        root: int | None = None,
        charge: bool = True,
        calls: int = 1,
        modelled_s: float = 0.0,
    ) -> None:
        """Second half of the seam: charge the op's link time, record bytes and seconds,
        close the op's profiler span (with its bytes, peer and modelled link seconds).

        ``charge=False`` when the link time was already paid elsewhere (an async op's future
        completes only once its modelled transfer is done; ``modelled_s`` says how much).
        """
        modelled = modelled_s
        if charge and self._links is not None and tag in self._link_tags:
            modelled = self._links.charge(
                op,
                nbytes,
                src=root if op == "broadcast" else (peer if op == "recv" else None),
                dst=peer if op == "send" else None,
            )
        seconds = 0.0 if self._background else self.clock.now() - start.at
        self.stats.record(op, tag, sent, received, seconds, calls=calls)
        if start.span is not None:
            self.spans.end(  # type: ignore[union-attr]
                start.span, tag=tag, bytes_sent=sent, bytes_received=received,
                peer=None if peer is None else self._global_ranks[peer],
                root=None if root is None else self._global_ranks[root],
                group=self._global_ranks, link_modelled_s=modelled, calls=calls,
            )  # fmt: skip

    def _group_name(self) -> str:
        ranks = self._global_ranks
        shown = ", ".join(map(str, ranks[:8])) + (", ..." if len(ranks) > 8 else "")
        return f"the group of {self.world_size} agents (global ranks {shown})"

    def _peer_name(self, peer: int) -> str:
        """``rank 3``; in a subgroup or regrouped Transport also the run's rank of that peer."""
        global_rank = self._global_ranks[peer] if 0 <= peer < len(self._global_ranks) else peer
        if self._global_ranks == list(range(self.world_size)):
            return f"rank {peer}"
        return f"rank {peer} of {self._group_name()} (global rank {global_rank})"

    @property
    def global_ranks(self) -> tuple[int, ...]:
        """The run's rank (as the launcher numbered agents) of each rank of this Transport.

        The identity for the run's Transport; for a subgroup or a regrouped one, the map back
        to the original ranks, e.g. ``(0, 2, 3)`` after agent 1 is gone.
        """
        return tuple(self._global_ranks)

    def _limit(self, timeout_s: float | None) -> float:
        return self.timeout_s if timeout_s is None else _check_timeout(timeout_s)

    def _wait(self, work: Any, limit: float) -> None:
        work.wait(timedelta(seconds=limit + _WAIT_GRACE_S))

    def _derive(self, pg: Any, ranks: list[int], *, run_wide: bool, prefix: str) -> Transport:
        """A Transport over ``pg``, the group of this one's ``ranks`` (sorted; this rank among
        them), sharing this one's stats, clock, timeout and (restricted) emulated links."""
        child = Transport.__new__(Transport)
        child._setup(
            pg=pg,
            rank=ranks.index(self.rank),
            world_size=len(ranks),
            backend=self.backend,
            timeout_s=self.timeout_s,
            store=None if self._store is None else dist.PrefixStore(prefix, self._store),
            global_ranks=[self._global_ranks[r] for r in ranks],
        )
        child.stats = self.stats  # one account per agent: a subgroup's bytes are the agent's
        child.clock = self.clock
        child.spans = self.spans
        child._link_tags = self._link_tags
        if self._table is not None:
            child._table = self._table.restricted(ranks)
            if self._links is not None:
                emulator = self._links.restricted(child._table, rank=child.rank)
                child._links = emulator if emulator.active else None
        child._run_wide = run_wide
        if run_wide:
            child._lineage = self._lineage
        return child

    def side_channel(self) -> Transport:
        """A Transport over this one's group for a service thread (a parameter server) that
        runs beside the agent's training: its own :class:`CommStats` and a real clock that
        charges no link time, so the service's traffic neither counts on nor moves this
        agent's training clock (the service times its messages by their timestamps, see
        :meth:`link_seconds`). Point-to-point only: collectives stay the agent's.

        Example::

            server = transport.side_channel()
            handle = server.irecv(torch.empty(6, dtype=torch.int64), channel=7)  # any worker
        """
        child = self._derive(self._pg, list(range(self.world_size)), run_wide=False, prefix="side/")
        child.stats = CommStats()
        child.clock = RealClock()
        child._links = None
        return child

    def link_seconds(
        self, op: str, nbytes: int, *, src: int | None = None, dst: int | None = None
    ) -> float:
        """Modelled seconds of ``op`` moving ``nbytes`` on this agent's emulated links, charged
        nowhere (0 without emulation): when a message sent at reading ``t`` arrives."""
        if self._table is None or self.world_size < 2 or not self._table.shaped:
            return 0.0
        from ddla.comm.linkmodel import op_seconds

        return op_seconds(op, nbytes, table=self._table, rank=self.rank, src=src, dst=dst)

    # ---- accounting for PyTorch components ------------------------------------------------

    @property
    def intercepts_payloads(self) -> bool:
        """Whether every training payload must pass through this Transport's own calls.

        True when emulated links shape training traffic (:meth:`emulate_links`) or a virtual
        clock must be re-synchronized at each collective; wrappers that
        transform payloads (secure aggregation) say True too. Strategies then must not bypass
        it with PyTorch's built-in collectives (DDP's C++ all-reduce).
        """
        emulated = self._links is not None or self.clock.synchronizes
        return emulated and "train" in self._link_tags and self.world_size > 1

    def account(self, op: str, nbytes: int, *, tag: str = "train") -> None:
        """Record a transfer that a PyTorch component made on this group outside the Transport.

        DDP's built-in all-reduce runs in C++ inside backward; the strategy calls this once per
        step with the gradient bytes so byte accounting still covers it (ring model, as if one
        all-reduce of ``nbytes``).
        """
        sent, received = ring_bytes(op, nbytes, self.world_size, self.rank)
        self._run(op, tag, sent, received, lambda: None, timeout_s=self.timeout_s)

    # ---- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Destroy the process group if this Transport created it; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Transport(rank={self.rank}, world_size={self.world_size}, "
            f"backend={self.backend!r}, timeout_s={self.timeout_s:g})"
        )
