"""A membership that changes while the run goes on: survive a lost agent, admit a restarted one.

:class:`ElasticGroup` holds the run-wide :class:`~ddla.comm.transport.Transport` of a
strategy that synchronizes at points it chooses (the periodic ones). Every training
collective goes through :meth:`ElasticGroup.call`; when it fails because a peer died
(``PeerFailedError``) or stopped answering (``CommTimeoutError``: gloo abandons the call after
``comm.timeout_s``), the survivors

1. name the silent peers by their heartbeats (:mod:`ddla.comm.heartbeat`: a killed or stopped
   process no longer beats; one that is merely slow does),
2. agree on the new members by first-writer-wins ``compare_set`` on the run's Store, under a
   key of the current *generation* (``elastic/<gen>/next``), so all adopt the same set,
3. build a fresh gloo group among themselves on the Store prefix ``elastic/<gen+1>/pg/`` and
   retry the collective there: the dead agent's shard stops contributing from this sync on.

A restarted agent (:meth:`ElasticGroup.rejoin`) asks to come back under
``elastic/join/<rank>``. At their next synchronization the members look for requests
(:meth:`admit`; only while someone is missing, so a full run pays nothing), agree on whom to
admit (``elastic/<gen>/join/<step>``), hand the newcomer a ticket (generation, members, step,
source), build the group with it, and the source — the lowest surviving member — sends it the
current model, optimizer, strategy state (global copy, outer optimizer) and step over the new
group (``Transport.send`` under tag ``heal``, so accounting and link emulation see the bytes).
The newcomer continues from that step with exactly the others' parameters.

Groups are built directly as ``ProcessGroupGloo`` on a Store prefix rather than with
``torch.distributed.new_group``: a restarted process has no default group to derive one from
(the survivors' world group still counts the dead agent), and a direct gloo group needs only
the Store, as torchft's reconfigurable ``ProcessGroupGloo`` does. Why not torchft itself: its
Manager needs a Lighthouse process and a per-step quorum round; here synchronization points
are rare (every H steps), the launcher's Store already exists and heartbeats already name the
dead, so membership is agreed only when it changes (docs/fault_tolerance.md).

Not covered: a peer that dies *inside* a collective after some survivors completed it (they
would hold a different global copy); kills land between steps. The Store's host must live
(``ddla run``'s launcher, torchrun's node 0 agent).

Example (inside an agent; see tests/comm/test_elastic_dist.py)::

    group = ElasticGroup(transport, store=transport.store, run_world=4)
    group.attach(strategy)          # the strategy's collectives now survive a loss
    ...
    group.events                    # [FaultEvent(agent=1, step=40, kind='killed', ...)]
"""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from ddla.comm.heartbeat import Heartbeat
from ddla.comm.transport import Transport
from ddla.errors import CommError, CommTimeoutError, PeerFailedError

log = logging.getLogger(__name__)
T = TypeVar("T")
_ROOT = "elastic"
#: Set once the agents' group formed and training began (the launcher reads it).
STARTED_KEY = f"{_ROOT}/started"
#: ``RESTARTING_KEY/<rank>``: the launcher is restarting that agent (see ``rejoin_wait_s``).
RESTARTING_KEY = f"{_ROOT}/restarting"
#: Key of the fault history inside the state a rejoin moves (see ``_adopt``).
_HISTORY = "elastic_history"


@dataclass(slots=True)
class FaultEvent:
    """One membership change, as ``summary.json``'s ``faults`` lists it.

    ``detect_s``: seconds this agent waited in the failed call before the error (0 for a
    rejoin); ``recover_s``: seconds from the error (or the admission) until the new group
    was ready and, for a rejoin, the state sent; ``steps_lost``: steps of the departed agent's
    work since the last synchronization it took part in, now discarded; ``heal_bytes``: the
    size of the state a rejoin moved (as the source sent it or the newcomer received it; 0
    on a member that neither sent nor received it).
    """

    agent: int
    step: int
    kind: str  # "killed" (connection closed), "timed out" (stopped answering), "rejoined"
    detect_s: float
    recover_s: float
    agents_after: list[int]
    steps_lost: int
    wall_s: float = field(default=0.0)  # seconds since the group was built, for the report
    heal_bytes: int = field(default=0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gloo_group(store: Any, rank: int, size: int, timeout_s: float) -> Any:
    """A gloo ProcessGroup of ``size`` members on ``store`` (no default group needed)."""
    limit = timedelta(seconds=timeout_s)
    backend = dist.ProcessGroupGloo(store, rank, size, limit)
    pg = dist.ProcessGroup(store, rank, size)
    pg._set_default_backend(dist.ProcessGroup.BackendType.GLOO)
    pg._register_backend(torch.device("cpu"), dist.ProcessGroup.BackendType.GLOO, backend)
    return pg


class ElasticGroup:
    """The current members of a run and the Transport among them (see the module docstring).

    ``transport`` is the run-wide Transport to start from, ``store`` the run's root Store (the
    one heartbeats use), ``run_world`` the number of agents the run was started with (shards
    are fixed by it). ``heartbeat`` is this agent's running one (one is started if None).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        store: Any,
        run_world: int,
        members: list[int] | None = None,
        generation: int = 0,
        heartbeat: Heartbeat | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self.transport = transport
        self.store = store
        self.run_world = run_world
        self.members = list(members if members is not None else transport.global_ranks)
        self.me = self.members[transport.rank]
        self.generation = generation
        self.events: list[FaultEvent] = []
        #: (admission key, seconds to wait) while this restarted agent waits to be admitted.
        self.joining: tuple[str, float] | None = None
        #: Seconds a sync waits for an agent the launcher is restarting to ask to rejoin.
        self.rejoin_wait_s = 0.0
        self._table = transport._table  # the run's links, by run rank
        self._listeners: list[Callable[[Transport], None]] = []
        self._state: Callable[[], dict[str, Any]] | None = None
        self._last_sync = 0
        self._started = time.monotonic()
        self._own_heartbeat = heartbeat is None
        self.heartbeat = heartbeat or Heartbeat(
            store, rank=self.me, world_size=run_world, interval_s=interval_s
        )
        if self._own_heartbeat:
            self.heartbeat.start()

    # ---- wiring --------------------------------------------------------------------------

    def attach(self, strategy: Any) -> None:
        """Let ``strategy`` (a periodic one) survive losses and admit restarted agents.

        The strategy routes its collectives through :meth:`call` and calls :meth:`admit` after
        each synchronization; a new Transport replaces the strategy's and its aggregator's.
        """

        def swap(transport: Transport) -> None:
            strategy.transport = transport
            strategy.aggregator.transport = transport

        swap(self.transport)
        self._listeners.append(swap)
        self._state = lambda: {
            "step": strategy.local_step,
            "model": strategy.model.state_dict(),
            "optimizer": strategy.optimizer.state_dict(),
            "strategy": strategy.state_dict(),
        }
        strategy.elastic = self
        if self.joining is None:  # the run's group formed: from now on the dead rejoin
            self.store.set(STARTED_KEY, b"1")
            log.info("training began with agents %s", self.members)

    def close(self) -> None:
        """Stop the heartbeat this group started (the Transport is closed by its owner)."""
        if self._own_heartbeat:
            self.heartbeat.stop()

    def summary(self) -> dict[str, Any]:
        """``summary.json`` entries: every fault event and the final members."""
        return {
            "faults": [e.as_dict() for e in self.events],
            "members": {"start": list(range(self.run_world)), "end": list(self.members)},
        }

    # ---- surviving a loss ----------------------------------------------------------------

    def call(self, fn: Callable[[], T], *, step: int) -> T:
        """``fn()`` (collectives on :attr:`transport`), redone among the survivors on a loss."""
        for _ in range(self.run_world):
            started = time.monotonic()
            try:
                result = fn()
            except (PeerFailedError, CommTimeoutError) as exc:
                self._recover(exc, step, detect_s=time.monotonic() - started)
                continue
            self._last_sync = step
            return result
        raise CommError(
            f"step {step}: the synchronization failed after {self.run_world} regroups",
            help="agents keep failing; check their logs",
        )

    def _recover(self, exc: BaseException, step: int, *, detect_s: float) -> None:
        """Agree on the survivors and build their group; again if one more fails meanwhile."""
        began = time.monotonic()
        for attempt in range(self.run_world):
            silent = set(self.heartbeat.silent_peers())
            # A restarted process beats under its rank again: that member's old life is
            # gone all the same (it is waiting to be admitted, not in this group).
            alive = [m for m in self.members if m not in silent and not self._restarted(m)]
            # A closed connection means the process is gone; a timeout, that it stopped
            # answering. The first survivor to decide names the kind, so all record the same.
            kind = "killed" if isinstance(exc, PeerFailedError) else "timed out"
            proposal = {"members": alive, "step": step, "kind": kind,
                        "generation": self._new_generation()}  # fmt: skip
            key = f"{_ROOT}/{self.generation}/next/{attempt}"
            decided = json.loads(self.store.compare_set(key, "", json.dumps(proposal)))
            members = decided["members"]
            if self.me not in members:
                raise PeerFailedError(
                    f"agent {self.me} was left out of the survivors {members} at step {step} "
                    f"(its heartbeat seemed stopped)",
                    help="this agent was stuck too long; restart it to rejoin",
                ) from exc
            gone = [m for m in self.members if m not in members]
            try:
                self._build(int(decided["generation"]), members)
            except CommTimeoutError as again:  # another agent failed while regrouping
                exc = again
                continue
            recover_s = time.monotonic() - began
            for agent in gone:
                self._record(agent, step, decided["kind"], detect_s, recover_s,
                             step - self._last_sync)  # fmt: skip
            self._say(
                f"agent(s) {', '.join(map(str, gone)) or 'none'} lost at step {step} "
                f"({decided['kind']}); continuing with agents {', '.join(map(str, members))}"
            )
            return
        raise CommError(
            f"step {step}: the survivors could not form a group in {self.run_world} tries",
            help="agents keep failing; check their logs",
        ) from exc

    def _restarted(self, rank: int) -> bool:
        keys = (f"{_ROOT}/join/{rank}", f"{RESTARTING_KEY}/{rank}")
        return rank != self.me and any(self.store.check([k]) for k in keys)

    def _new_generation(self) -> int:
        """A generation number never used before in this run (so Store prefixes are fresh)."""
        return int(self.store.add(f"{_ROOT}/generations", 1))

    # ---- admitting a restarted agent -----------------------------------------------------

    def admit(self, step: int) -> None:
        """At a synchronization point: admit restarted agents that asked to rejoin."""
        if len(self.members) == self.run_world:
            return
        missing = [r for r in range(self.run_world) if r not in self.members]
        if self.rejoin_wait_s > 0:  # hold this sync a while for agents being restarted
            coming = [f"{_ROOT}/join/{r}" for r in missing
                      if self.store.check([f"{RESTARTING_KEY}/{r}"])]  # fmt: skip
            if coming:
                try:
                    self.store.wait(coming, timedelta(seconds=self.rejoin_wait_s))
                except RuntimeError:  # not back in time: admit it at a later sync
                    log.info("restarted agents not back within %g s", self.rejoin_wait_s)
        seen = [r for r in missing if self.store.check([f"{_ROOT}/join/{r}"])]
        key = f"{_ROOT}/{self.generation}/join/{step}"
        proposal = json.dumps({"joiners": seen, "generation": self._new_generation()})
        decided = json.loads(self.store.compare_set(key, "", proposal))
        joiners, generation = decided["joiners"], int(decided["generation"])
        if not joiners:
            return
        began = time.monotonic()
        members = sorted(self.members + joiners)
        source = self.members[0]
        ticket = json.dumps(
            {"generation": generation, "members": members, "step": step, "source": source}
        )
        for r in joiners:
            self.store.set(f"{_ROOT}/admit/{r}", ticket)
        healed = 0
        try:
            self._build(generation, members)
            if self.me == source:
                blob = _pack({**(self._state() if self._state is not None else {}),
                              _HISTORY: self._history()})  # fmt: skip
                healed = blob.numel()
                for r in joiners:
                    dst = members.index(r)
                    self.transport.send(torch.tensor([blob.numel()]), dst=dst, tag="heal")
                    self.transport.send(blob, dst=dst, tag="heal")
        except (PeerFailedError, CommTimeoutError) as exc:  # a newcomer died while joining
            log.info("admitting agent(s) %s at step %d failed: %s", joiners, step, exc)
            self._recover(exc, step, detect_s=0.0)
            return
        for r in joiners:
            self._record(r, step, "rejoined", 0.0, time.monotonic() - began, 0, healed)
        self._say(f"agent(s) {', '.join(map(str, joiners))} rejoined at step {step}")

    @classmethod
    def rejoin(
        cls,
        store: Any,
        *,
        rank: int,
        run_world: int,
        wait_s: float,
        base: Transport | None = None,
        heartbeat: Heartbeat | None = None,
        interval_s: float = 1.0,
    ) -> ElasticGroup:
        """Ask the live agents to take this restarted agent (run rank ``rank``) back.

        Returns at once; :meth:`pull` waits (at most ``wait_s``) until the others admit it at
        their next synchronization, joins their group and receives the state. ``base`` carries
        stats, clock and emulated links (a one-agent Transport by default).
        """
        base = base or Transport.single()
        group = cls(
            base, store=store, run_world=run_world, members=[rank], heartbeat=heartbeat,
            interval_s=interval_s,
        )  # fmt: skip
        admit_key = f"{_ROOT}/admit/{rank}"
        store.delete_key(admit_key)  # a ticket of an earlier life of this rank
        store.set(f"{_ROOT}/join/{rank}", b"1")
        group.joining = (admit_key, wait_s)
        return group

    def pull(self) -> dict[str, Any]:
        """Wait to be admitted, join the group, return the state the source sent: ``step``,
        ``model``, ``optimizer``, ``strategy`` (loaded with ``weights_only=True``)."""
        if self.joining is None:
            raise CommError("pull() on an agent that is not rejoining", help="call rejoin() first")
        admit_key, wait_s = self.joining
        began = time.monotonic()
        try:
            self.store.wait([admit_key], timedelta(seconds=wait_s))
        except RuntimeError as exc:
            self.store.delete_key(f"{_ROOT}/join/{self.me}")
            raise CommTimeoutError(
                f"agent {self.me} asked to rejoin, but no live agent admitted it within "
                f"{wait_s:g} s",
                help="the others admit at their next synchronization: are they alive? "
                "raise fault.rejoin_timeout_s if synchronizations are far apart",
            ) from exc
        ticket = json.loads(self.store.get(admit_key))
        self.store.delete_key(f"{_ROOT}/join/{self.me}")
        self.store.delete_key(f"{RESTARTING_KEY}/{self.me}")
        self.joining = None
        waited = time.monotonic() - began
        self._build(int(ticket["generation"]), list(ticket["members"]))
        step = int(ticket["step"])
        self._last_sync = step
        source = self.members.index(int(ticket["source"]))
        size = self.transport.recv(torch.zeros(1, dtype=torch.int64), src=source, tag="heal")
        blob = self.transport.recv(
            torch.empty(int(size.item()), dtype=torch.uint8), src=source, tag="heal"
        )
        state = torch.load(io.BytesIO(blob.numpy().tobytes()), weights_only=True)
        self._adopt(state.pop(_HISTORY, None))
        pulled = time.monotonic() - began - waited
        self._record(self.me, step, "rejoined", waited, pulled, 0, blob.numel())
        log.warning(
            "rejoined at step %d with agents %s (admitted after %.3f s; state of %d bytes "
            "pulled in %.3f s)", step, self.members, waited, blob.numel(), pulled,
        )  # fmt: skip
        return state

    # ---- building a group ----------------------------------------------------------------

    def _build(self, generation: int, members: list[int]) -> None:
        """Join the gloo group of ``members`` for ``generation``; swap the Transport in."""
        old = self.transport
        rank = members.index(self.me)
        # Long enough for a member still blocked in the failed call (up to its timeout).
        limit = 2 * old.timeout_s + min(10.0, old.timeout_s)
        prefix = f"{_ROOT}/{generation}/"
        pg = None
        if len(members) > 1:
            try:
                store = dist.PrefixStore(prefix + "pg/", self.store)
                pg = gloo_group(store, rank, len(members), limit)
            except RuntimeError as exc:
                raise CommTimeoutError(
                    f"agents {members} did not all build their new group within {limit:g} s "
                    f"({str(exc).splitlines()[0][:160]})",
                    help="another agent failed meanwhile; check the agents' logs",
                ) from exc
        new = Transport.__new__(Transport)
        new._setup(
            pg=pg, rank=rank, world_size=len(members), backend=old.backend,
            timeout_s=old.timeout_s, store=dist.PrefixStore(prefix + "run/", self.store),
            global_ranks=members,
        )  # fmt: skip
        new._run_wide = False  # subgroups need new_group, which a direct group cannot give
        # Healing bytes cross the same emulated links as training's.
        new.stats, new.clock = old.stats, old.clock
        new._link_tags = old._link_tags | {"heal"} if "train" in old._link_tags else old._link_tags
        if self._table is not None and self._table.world_size == self.run_world:
            from ddla.comm.emulation import LinkEmulator

            new._table = self._table.restricted(members)
            emulator = LinkEmulator(new._table, new.clock, rank=rank)
            new._links = emulator if emulator.active else None
        new.departed = tuple(r for r in range(self.run_world) if r not in members)
        self.transport, self.members, self.generation = new, list(members), generation
        for listener in self._listeners:
            listener(new)

    def _record(
        self, agent: int, step: int, kind: str, detect: float, recover: float, lost: int,
        heal_bytes: int = 0,
    ) -> None:  # fmt: skip
        self.events.append(
            FaultEvent(
                agent=agent, step=step, kind=kind, detect_s=round(detect, 3),
                recover_s=round(recover, 3), agents_after=list(self.members), steps_lost=lost,
                wall_s=round(time.monotonic() - self._started, 3), heal_bytes=heal_bytes,
            )
        )  # fmt: skip

    def _history(self) -> dict[str, Any]:
        """The run's fault history so far, for a newcomer (it may write the summary)."""
        return {"events": [e.as_dict() for e in self.events],
                "wall_s": time.monotonic() - self._started}  # fmt: skip

    def _adopt(self, history: dict[str, Any] | None) -> None:
        """Take the source's history: a restarted agent that becomes rank 0 of the group
        (agent 0 came back) writes summary.json, which must list the faults before it."""
        if history is None:
            return
        self.events = [FaultEvent(**e) for e in history["events"]] + self.events
        self._started = time.monotonic() - float(history["wall_s"])

    def _say(self, line: str) -> None:
        log.info(line)
        if self.transport.rank == 0:  # stdout: the console's agent keeps it (supervise.py)
            print(f"ddla: {line}", file=sys.stdout, flush=True)


def _pack(state: dict[str, Any]) -> torch.Tensor:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
