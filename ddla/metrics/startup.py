"""Where the time before the first step goes: launcher, spawn, imports, rendezvous, data.

Each process records wall-clock marks (``time.time()``, comparable across the processes of one
machine) as it passes the points of its start-up; the launcher hands its own marks to the
agents through the environment (``DDLA_LAUNCH_MARKS``), and rank 0 turns them into phases in
``summary.json`` (``time.startup_s`` and ``time.startup``), printed by ``ddla run --timing``.
A process's own start comes from ``/proc`` so interpreter start and imports are counted too.

Example:
    >>> mark("example")
    >>> "example" in marks()
    True
"""

from __future__ import annotations

import json
import os
import time

__all__ = ["ENV", "launcher_env", "mark", "marks", "phases", "process_start", "reset"]

ENV = "DDLA_LAUNCH_MARKS"
_MARKS: dict[str, float] = {}
_STATE = {"launched": False}

# (phase, from mark, to mark): consecutive marks of one run, launcher first, then rank 0.
_PHASES = (
    ("launcher_imports", "launcher_process", "launch"),
    ("preflight", "launch", "spawn"),
    ("spawn", "spawn", "agent_process"),
    ("agent_imports", "agent_process", "agent_main"),
    ("rendezvous", "agent_main", "joined"),
    ("config_and_job", "joined", "job"),  # agree_on_config; a zoo job maps its dataset
    ("handshake", "job", "secured"),  # security.enabled: the authenticated handshake
    ("data", "secured", "data"),  # data.source: load and agree; the shard's rows
    ("model_and_optimizer", "data", "ready"),
    ("first_step", "ready", "first_step"),
)
# After the first step (not part of ``total``): the last steps, strategy.finish() and the
# final evaluation (an agent's first evaluation imports torchmetrics).
_AFTER = (("to_final_eval", "first_step", "final_eval"),)


def process_start() -> float | None:
    """Wall-clock time this process started (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/stat") as fh:
            # Field 22 (starttime, clock ticks after boot); the command name may hold spaces.
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        # Seconds since then on the same clock (boot time), not /proc/stat's btime: that is
        # whole seconds, and its rounding put agents' starts up to 1 s before their spawn.
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def reset() -> None:
    """Forget this process's marks (a new run starts in the same process)."""
    _MARKS.clear()


def mark(name: str, at: float | None = None) -> None:
    """Record that this process reached ``name`` now (the first time only)."""
    _MARKS.setdefault(name, time.time() if at is None else at)


def marks() -> dict[str, float]:
    """This process's marks plus the launcher's (from the environment)."""
    inherited = json.loads(os.environ.get(ENV, "{}"))
    return inherited | _MARKS


def launcher_env() -> None:
    """Hand the launcher's marks to the agents it is about to spawn.

    The process's own start counts only for its first run: a later ``ddla.launch`` in the
    same Python process did not pay the interpreter's start or the imports.
    """
    start = process_start()
    if start is not None and not _STATE["launched"]:
        mark("launcher_process", start)
    _STATE["launched"] = True
    mark("spawn")
    os.environ[ENV] = json.dumps(_MARKS)


def phases(m: dict[str, float] | None = None) -> dict[str, float]:
    """Seconds per start-up phase, for the phases whose two marks exist, plus ``total``."""
    m = marks() if m is None else m
    out = {
        name: round(m[b] - m[a], 4)
        for name, a, b in (*_PHASES, *_AFTER)
        if a in m and b in m and m[b] >= m[a]
    }
    starts = ("launcher_process", "launch", "agent_process")
    first = min((m[k] for k in starts if k in m), default=None)
    if first is not None and "first_step" in m:
        out["total"] = round(m["first_step"] - first, 4)
    return out
