"""Heartbeats over the rendezvous Store: who stopped answering when a call times out.

gloo reports a stuck peer as a timeout on *this* agent's call ("Timed out waiting 20000ms for
recv"), which names neither the peer nor why. Each agent runs a :class:`Heartbeat`: a daemon
thread that increments its counter ``hb/RANK`` in the c10d Store every ``interval_s``. When a
call times out, :meth:`Heartbeat.silent_peers` reads every counter twice, a few intervals
apart, and returns the ranks whose counter did not move: processes that are stopped
(SIGSTOP), swapped out or hung in C code that holds the GIL. A peer whose process is alive but
slow still beats, and is not named. Counters, not timestamps, so clocks need not agree.

Example (one agent, a local HashStore):
    >>> import torch.distributed as dist
    >>> hb = Heartbeat(dist.HashStore(), rank=0, world_size=1, interval_s=0.05).start()
    >>> hb.silent_peers()
    []
    >>> hb.stop()
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)


class Heartbeat:
    """This agent's heartbeat thread and the check of its peers' heartbeats."""

    def __init__(
        self,
        store: Any,
        *,
        rank: int,
        world_size: int,
        interval_s: float = 1.0,
        prefix: str = "hb",
    ) -> None:
        self.store, self.rank, self.world_size = store, rank, world_size
        self.interval_s = interval_s
        self.prefix = prefix
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _key(self, rank: int) -> str:
        return f"{self.prefix}/{rank}"

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self.store.add(self._key(self.rank), 1)
            except Exception as exc:  # the store is gone (run ending): stop quietly
                log.debug("heartbeat stopped: %s", exc)
                return
            self._stop.wait(self.interval_s)

    def start(self) -> Heartbeat:
        """Start beating (idempotent); returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="ddla-heartbeat", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating; waits at most one interval for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 1.0)

    def _counts(self) -> dict[int, int]:
        # add(key, 0) reads a counter without blocking (a missing one reads as 0).
        peers = [r for r in range(self.world_size) if r != self.rank]
        return {r: int(self.store.add(self._key(r), 0)) for r in peers}

    def silent_peers(self, *, intervals: float = 3.0) -> list[int]:
        """Peers whose heartbeat did not move during ``intervals`` heartbeat intervals.

        Returns ``[]`` when the Store itself cannot be read (then nobody can be named).
        """
        if self.world_size < 2:
            return []
        try:
            before = self._counts()
            time.sleep(self.interval_s * intervals)
            after = self._counts()
        except Exception as exc:
            log.info("cannot read peers' heartbeats: %s", exc)
            return []
        return sorted(r for r, n in after.items() if n == before[r])
