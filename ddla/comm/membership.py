"""A new membership after an agent is gone: the survivors continue on a new process group.

A mixin of :class:`~ddla.comm.transport.Transport`. A dead peer breaks a gloo group for good
(its connection is closed), so the survivors build a new one among themselves:

1. **check in** on the run's c10d Store under a fresh prefix (``membership/<generation>/``,
   agreed because every survivor counts its regroups), so a survivor that never arrives is
   named by its rank instead of hanging a group constructor;
2. **agree** on who is in: with ``survivors`` given, exactly those; with ``survivors=None``,
   whoever checked in within the timeout, settled by the Store's first-writer-wins
   ``compare_set`` so every survivor adopts the same set (an agent that arrives too late is
   told it was left out);
3. **build** a real new group with ``torch.distributed.new_group`` over the survivors' run
   ranks. Its gloo rendezvous uses its own fresh prefix of the same Store and connects only
   the members, so the dead agent is not needed; the group is registered, so PyTorch
   components (DDP, pipelining) accept it.

The returned Transport renumbers the survivors ``0..k-1`` in order, maps them back with
:attr:`~ddla.comm.transport.Transport.global_ranks`, lists who left in ``departed``, keeps the
same :class:`~ddla.comm.stats.CommStats`, clock and emulated links (by run rank), and takes
over closing the run's group. The old Transport is closed: a call on it says what replaced it.

Why not torchft's reconfigurable process group: it needs its lighthouse/manager processes and
its own quorum protocol to drive reconfiguration; here the rendezvous Store the launcher
already runs is enough to agree a membership, and ``new_group`` is the plain c10d way to build
the group (measured with gloo, torch 2.13: a group among survivors of a killed agent works).

Example (agent 1 died; the others carry on)::

    try:
        transport.all_reduce(grad)
    except PeerFailedError:
        transport = transport.regroup(timeout_s=10)   # whoever is alive, agreed
        transport.departed                            # (1,)
        transport.all_reduce(grad)                    # among the survivors
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from ddla.comm.subgroup import Lineage, check_ranks
from ddla.errors import CommError, CommTimeoutError, PeerFailedError

if TYPE_CHECKING:
    from ddla.comm.transport import Transport


class Membership:
    """Continue with fewer agents (see :class:`Transport`)."""

    # Provided by Transport.
    rank: int
    world_size: int
    departed: tuple[int, ...]
    _pg: Any
    _global_ranks: list[int]
    _run_wide: bool
    _owns_group: bool
    _closed: bool
    _closed_why: tuple[str, str]
    _lineage: Lineage
    _run: Callable[..., Any]
    _limit: Callable[[float | None], float]
    _derive: Callable[..., Any]
    store: Any

    def continue_without(self, dead: Iterable[int], *, timeout_s: float | None = None) -> Transport:
        """:meth:`regroup` among every rank but ``dead`` (this Transport's numbering)."""
        dead = list(dead)
        gone = set(check_ranks(dead, self.world_size, "continue_without") if dead else ())
        return self.regroup(
            [r for r in range(self.world_size) if r not in gone], timeout_s=timeout_s
        )

    def regroup(
        self, survivors: Sequence[int] | None = None, *, timeout_s: float | None = None
    ) -> Transport:
        """A Transport over the survivors, this one closed (see the module docstring).

        ``survivors`` are ranks of this Transport; ``None`` means whoever checks in within
        ``timeout_s`` (the Transport's timeout by default). Every survivor calls it.

        Raises:
            CommTimeoutError: a named survivor did not check in in time (named by rank).
            PeerFailedError: this agent checked in too late and the others left it out.
        """
        if not self._run_wide:
            raise CommError(
                "regroup() called on a subgroup: a membership is the run's, not a group's",
                help="regroup the run-wide Transport, then split it into groups again",
            )
        limit = self._limit(timeout_s)
        expected = (
            list(range(self.world_size))
            if survivors is None
            else check_ranks(survivors, self.world_size, "regroup")
        )
        if self.rank not in expected:
            raise ValueError(f"regroup: this agent (rank {self.rank}) is not among {expected}")
        lineage = self._lineage
        base = f"membership/{lineage.generation}/"
        lineage.generation += 1
        lineage.groups = 0
        members = self._check_in(base, expected, limit, agree=survivors is None)
        world = [self._global_ranks[r] for r in members]

        def body() -> Any:
            if self._pg is None:  # one agent, no process group
                return None
            return dist.new_group(world, timeout=timedelta(seconds=limit))

        pg = self._run(
            "regroup", "control", 0, 0, body, timeout_s=limit, charge=False,
            where=f"the survivors with global ranks {world}",
        )  # fmt: skip
        child = self._derive(pg, members, run_wide=True, prefix=f"{base}run/")
        child.departed = self.departed + tuple(
            g for r, g in enumerate(self._global_ranks) if r not in members
        )
        child._owns_group, self._owns_group = self._owns_group, False
        self._closed = True
        self._closed_why = (
            f" (replaced by regroup(): the survivors are global ranks {world})",
            "use the Transport regroup() returned",
        )
        return child

    def _check_in(self, base: str, expected: list[int], limit: float, *, agree: bool) -> list[int]:
        """Announce this agent; wait for ``expected``; return the agreed members."""
        store = self.store
        key = {r: f"{base}in/{self._global_ranks[r]}" for r in expected}
        store.set(key[self.rank], b"1")
        deadline = time.monotonic() + limit
        missing = set(expected)
        pause = 0.01
        while missing:
            missing = {r for r in missing if not store.check([key[r]])}
            if not missing or time.monotonic() >= deadline:
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.2)
        if not agree:
            if missing:
                names = ", ".join(
                    f"{r} (global rank {self._global_ranks[r]})" for r in sorted(missing)
                )
                raise CommTimeoutError(
                    f"regroup: rank(s) {names} did not check in within {limit:g} s",
                    help="those agents are dead or stuck: leave them out "
                    "(continue_without) or let regroup() find the survivors (survivors=None)",
                )
            return expected
        view = json.dumps(sorted(set(expected) - missing))
        members = sorted(json.loads(store.compare_set(f"{base}members", "", view)))
        if self.rank not in members:
            raise PeerFailedError(
                f"regroup: this agent (global rank {self._global_ranks[self.rank]}) checked in "
                f"after the survivors had agreed on global ranks "
                f"{[self._global_ranks[r] for r in members]}; it was left out",
                help="this agent was too slow to rejoin: restart it, or give regroup() a "
                "longer timeout_s",
            )
        return members
