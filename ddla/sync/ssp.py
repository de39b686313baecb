"""Pure parts of the parameter server: parameter blocks over servers, the stale synchronous
parallel gate, and the server optimizer. No process group needed (tested alone).

Stale synchronous parallel (Ho et al. 2013, "More Effective Distributed ML via a Stale
Synchronous Parallel Parameter Server", NeurIPS): every worker has a *clock*, the number of
updates it has pushed. A worker at clock ``c`` may go on only while ``c - min_j c_j <= S``: it
is never more than ``S`` clocks ahead of the slowest worker, so the parameters it computes on
miss at most ``S`` clocks of anybody's updates; a faster worker waits instead. ``S = 0`` is
bulk synchronous (every worker at the same clock: the server averages one update of each and
takes one step, synchronous SGD exactly); ``S = inf`` never waits (fully asynchronous).

Example:
    >>> gate = SspGate(workers=[1, 2, 3], staleness=1)
    >>> gate.push(1), gate.push(1)        # worker 1 at clock 2: 2 ahead of workers 2 and 3
    (0, 1)
    >>> gate.may_go(1), gate.staleness(1)
    (False, 2)
    >>> _ = gate.push(2), gate.push(3)
    >>> gate.may_go(1), gate.staleness(1)
    (True, 1)
    >>> assign_blocks([10, 1000, 20, 500], servers=2)
    [[1], [0, 2, 3]]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

#: ``sync.server_optim`` values.
SERVER_OPTIMIZERS = ("sgd", "momentum", "adam")


def assign_blocks(numels: Sequence[int], servers: int) -> list[list[int]]:
    """Parameter tensors (by index) per server: whole tensors, largest first onto the least
    loaded server, so shards are balanced by element count; indices sorted within a shard."""
    load = [0] * servers
    shards: list[list[int]] = [[] for _ in range(servers)]
    for i in sorted(range(len(numels)), key=lambda i: (-numels[i], i)):
        s = min(range(servers), key=lambda s: (load[s], s))
        shards[s].append(i)
        load[s] += numels[i]
    return [sorted(s) for s in shards]


def staleness_scale(staleness: int, *, enabled: bool) -> float:
    """``1 / (1 + staleness)`` when staleness-aware scaling is on (Zhang et al. 2016,
    "Staleness-aware async-SGD", IJCAI), else 1."""
    return 1.0 / (1.0 + staleness) if enabled else 1.0


def build_server_optimizer(
    params: Iterable[torch.Tensor], name: str, *, lr: float, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """The server's optimizer over its shard; updates arrive as gradients (a worker's
    ``lr * grad`` or its pseudo-gradient ``anchor - local``)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown server optimizer {name!r}")


class SspGate:
    """The clocks of the workers and the stale-synchronous condition on them."""

    def __init__(self, *, workers: Sequence[int], staleness: float) -> None:
        self.clocks = {w: 0 for w in workers}
        self.done: set[int] = set()
        self.bound = staleness

    def push(self, worker: int) -> int:
        """Count one pushed update of ``worker``; return its clock before the push."""
        before = self.clocks[worker]
        self.clocks[worker] = before + 1
        return before

    def finish(self, worker: int) -> None:
        """``worker`` pushes no more: it no longer holds the others back."""
        self.done.add(worker)

    def slowest(self) -> int:
        """The clock of the slowest worker still training (the version every worker's view
        is complete up to)."""
        active = [c for w, c in self.clocks.items() if w not in self.done]
        return min(active) if active else max(self.clocks.values(), default=0)

    def staleness(self, worker: int) -> int:
        """How many clocks ``worker`` is ahead of the slowest worker still training."""
        return max(self.clocks[worker] - self.slowest(), 0)

    def may_go(self, worker: int) -> bool:
        """Whether ``worker`` may compute its next update now (``staleness <= S``)."""
        return math.isinf(self.bound) or self.staleness(worker) <= self.bound
