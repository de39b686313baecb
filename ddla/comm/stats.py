"""Exact communication accounting: calls, bytes and seconds per op and per tag.

Every Transport call records one entry under its op name (``"all_reduce"``, ``"send"``, ...)
and its tag (``"train"`` for training traffic, ``"eval"`` for evaluation/merge traffic,
``"control"`` for membership and handshakes), so a report can say how many bytes training
itself cost, separate from everything around it. Counts are plain integers; seconds are wall
time spent inside the call.

Example:
    >>> from ddla.comm.stats import CommStats
    >>> stats = CommStats()
    >>> stats.record("all_reduce", "train", sent=96, received=96, seconds=0.5)
    >>> stats.record("all_gather_object", "eval", sent=10, received=20, seconds=0.25)
    >>> stats.totals("train")
    {'calls': 1, 'bytes_sent': 96, 'bytes_received': 96, 'seconds': 0.5}
    >>> stats.totals()["bytes_received"]
    116
    >>> sorted(stats.as_dict()["by_tag"])
    ['eval', 'train']
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ddla.errors import CheckpointError

_FIELDS = ("calls", "bytes_sent", "bytes_received", "seconds")


@dataclass(kw_only=True, slots=True)
class _Counter:
    calls: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0

    def add(self, other: _Counter) -> None:
        self.calls += other.calls
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received
        self.seconds += other.seconds

    def as_dict(self) -> dict[str, int | float]:
        return {name: getattr(self, name) for name in _FIELDS}


class CommStats:
    """Counters keyed by ``(op, tag)``; views per op, per tag and in total.

    Thread-safe: DDP communication hooks complete their futures on a backend thread, which
    records the seconds while the training thread may be recording the next call.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str], _Counter] = {}

    def record(
        self,
        op: str,
        tag: str,
        sent: int,
        received: int,
        seconds: float,
        *,
        calls: int = 1,
    ) -> None:
        """Add one call of ``op`` under ``tag``.

        ``calls=0`` adds bytes or seconds to the op without counting another call; the
        asynchronous all-reduce uses it to add the seconds once its future completes.
        """
        if sent < 0 or received < 0 or seconds < 0 or calls < 0:
            raise ValueError(
                f"CommStats.record needs non-negative counts, got sent={sent}, "
                f"received={received}, seconds={seconds}, calls={calls}"
            )
        entry = _Counter(
            calls=int(calls), bytes_sent=int(sent), bytes_received=int(received), seconds=seconds
        )
        with self._lock:
            self._counters.setdefault((op, tag), _Counter()).add(entry)

    def totals(self, tag: str | None = None) -> dict[str, int | float]:
        """Sum over all ops, for one tag or (``tag=None``) for every tag."""
        total = _Counter()
        with self._lock:
            for (_, entry_tag), counter in self._counters.items():
                if tag is None or entry_tag == tag:
                    total.add(counter)
        return total.as_dict()

    def as_dict(self) -> dict[str, Any]:
        """JSON-serializable view: ``total``, ``by_op``, ``by_tag`` and ``by_op_tag``."""
        by_op: dict[str, _Counter] = {}
        by_tag: dict[str, _Counter] = {}
        total = _Counter()
        with self._lock:
            items = sorted(self._counters.items())
            for (op, tag), counter in items:
                by_op.setdefault(op, _Counter()).add(counter)
                by_tag.setdefault(tag, _Counter()).add(counter)
                total.add(counter)
            by_op_tag = {f"{op}/{tag}": counter.as_dict() for (op, tag), counter in items}
        return {
            "total": total.as_dict(),
            "by_op": {op: counter.as_dict() for op, counter in by_op.items()},
            "by_tag": {tag: counter.as_dict() for tag, counter in by_tag.items()},
            "by_op_tag": by_op_tag,
        }

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint; :meth:`load_state_dict` restores it exactly."""
        with self._lock:
            entries = [
                {"op": op, "tag": tag, **counter.as_dict()}
                for (op, tag), counter in sorted(self._counters.items())
            ]
        return {"version": 1, "entries": entries}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace all counters with those of ``state`` (from :meth:`state_dict`)."""
        if state.get("version") != 1 or not isinstance(state.get("entries"), list):
            raise CheckpointError(
                f"not a CommStats state_dict (version 1): keys {sorted(state)}",
                help="load the 'comm_stats' entry of a checkpoint written by this ddla version",
            )
        counters = {
            (entry["op"], entry["tag"]): _Counter(
                calls=int(entry["calls"]),
                bytes_sent=int(entry["bytes_sent"]),
                bytes_received=int(entry["bytes_received"]),
                seconds=float(entry["seconds"]),
            )
            for entry in state["entries"]
        }
        with self._lock:
            self._counters = counters

    def reset(self) -> None:
        """Forget all counts."""
        with self._lock:
            self._counters = {}

    def __repr__(self) -> str:
        total = self.totals()
        return (
            f"CommStats(calls={total['calls']}, bytes_sent={total['bytes_sent']}, "
            f"bytes_received={total['bytes_received']}, seconds={total['seconds']:.3f})"
        )
