"""Subgroups: collectives among some agents (pipeline stages, replica groups, federated cohorts).

A mixin of :class:`~ddla.comm.transport.Transport`. ``subgroup(ranks)`` creates a real new
process group with ``torch.distributed.new_group`` (so PyTorch components that need a
registered group, such as ``torch.distributed.pipelining`` or DDP, accept it) and wraps it in a
Transport of its own: ranks renumbered ``0..len(ranks)-1`` in order, :attr:`global_ranks` mapping
them back, errors naming the run's ranks, and, because one agent has one account, bytes and
seconds recorded in the parent's :class:`~ddla.comm.stats.CommStats`. Emulated links follow the
agents by their run ranks (the parent's link table restricted to the members, the same link
queue and clock), so call :meth:`~ddla.comm.transport.Transport.emulate_links` first.

Rule (that of ``torch.distributed.new_group``): every live agent of the run calls ``subgroup``
(or ``split``) with the same arguments in the same order, members or not, on the run-wide
Transport (the world, or the survivors' Transport after a regroup). A non-member gets ``None``.

Example (two replica groups of two agents on a run of four)::

    pairs = transport.split([[0, 1], [2, 3]])      # every agent calls it
    pairs.rank, pairs.global_ranks                 # on agent 3: 1, (2, 3)
    pairs.all_reduce(grad, op="avg")               # averages with its partner only
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from ddla.errors import CommError

if TYPE_CHECKING:
    from ddla.comm.transport import Transport


@dataclass(slots=True)
class Lineage:
    """Shared by a run-wide Transport and what it regroups into: the agreed counters that make
    each new group's store prefix fresh and the same on every agent."""

    generation: int = 0
    """Regroups so far."""
    groups: int = 0
    """Subgroups created in this generation."""


def check_ranks(ranks: Sequence[int], world_size: int, what: str) -> list[int]:
    """``ranks`` sorted, after checking they are distinct ranks of a group of ``world_size``."""
    out = sorted(int(r) for r in ranks)
    if not out or len(set(out)) != len(out) or not all(0 <= r < world_size for r in out):
        raise ValueError(
            f"{what}: ranks must be distinct ranks in 0..{world_size - 1} (at least one), "
            f"got {list(ranks)}"
        )
    return out


class Subgroups:
    """Groups of some agents over the Transport's run (see :class:`Transport`)."""

    # Provided by Transport.
    rank: int
    world_size: int
    backend: str
    _pg: Any
    _global_ranks: list[int]
    _run_wide: bool
    _lineage: Lineage
    _run: Callable[..., Any]
    _limit: Callable[[float | None], float]
    _derive: Callable[..., Any]

    def subgroup(self, ranks: Sequence[int], *, timeout_s: float | None = None) -> Transport | None:
        """A Transport over the agents ``ranks`` (this Transport's numbering); None for an
        agent not among them. Every live agent calls it (see the module docstring).

        Raises:
            CommError: called on a subgroup (create groups from the run-wide Transport).
            CommTimeoutError: a member did not arrive within ``timeout_s``.
        """
        members = check_ranks(ranks, self.world_size, "subgroup")
        if not self._run_wide:
            raise CommError(
                "subgroup() called on a subgroup: every live agent of the run must take part "
                "in creating a group, and this Transport's non-members cannot",
                help="create every group from the run-wide Transport (the world, or what "
                "regroup() returned), e.g. transport.split([[0, 1], [2, 3]])",
            )
        limit = self._limit(timeout_s)
        lineage = self._lineage
        prefix = f"group/{lineage.generation}.{lineage.groups}/"  # agreed: all agents count
        lineage.groups += 1
        world = [self._global_ranks[r] for r in members]

        def body() -> Any:
            if self._pg is None:  # one agent, no process group
                return None
            return dist.new_group(world, timeout=timedelta(seconds=limit))

        pg = self._run(
            "new_group", "control", 0, 0, body, timeout_s=limit, charge=False,
            where=f"the agents with global ranks {world}",
        )  # fmt: skip
        if self.rank not in members:
            return None
        return self._derive(pg, members, run_wide=False, prefix=prefix)

    def split(
        self, groups: Sequence[Sequence[int]], *, timeout_s: float | None = None
    ) -> Transport:
        """Partition the agents into ``groups``; return this agent's group as a Transport.

        Every agent is in exactly one group; every agent calls it with the same ``groups``.

        Example::

            stages = transport.split([[0, 2], [1, 3]])   # agents 0, 2 hold stage 0
        """
        seen = [r for group in groups for r in check_ranks(group, self.world_size, "split")]
        if sorted(seen) != list(range(self.world_size)):
            raise ValueError(
                f"split: every rank 0..{self.world_size - 1} must be in exactly one group, "
                f"got {[list(g) for g in groups]}"
            )
        mine: Transport | None = None
        for group in groups:
            made = self.subgroup(group, timeout_s=timeout_s)
            if made is not None:
                mine = made
        assert mine is not None  # this rank is in one group: checked above
        return mine
