"""Warm agents: fork them from a server that has already imported what every agent imports.

A spawned agent is a fresh interpreter: it imports torch, ddla, ``torch._dynamo`` (the first
``torch.optim.Optimizer.step`` imports it) and torchmetrics (the first evaluation) — about 6 s
of CPU per agent measured here, paid N times over on a machine with fewer cores than agents.
Python's ``forkserver`` start method exists for this: one clean, single-threaded server
process imports the preload modules once and forks each agent from itself, so an agent starts
with them already loaded. The CLI starts the server first thing (:func:`start`), so its imports
run while the launcher parses the config and loads the dataset.

A forked agent inherits the *server's* environment, working directory, ``sys.path`` and
stdout/stderr as they were when it started, not the launcher's as they are now (a spawned one
gets the latter). :class:`LauncherContext` carries those across and :func:`call` applies them
in the agent before anything else runs, so both start methods see the same process state.

    >>> from ddla import warm
    >>> ctx = warm.LauncherContext.capture()
    >>> warm.call(ctx, len, "abc")
    3
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: What a forked agent finds already imported: torch and ddla's agent, and the modules torch
#: imports lazily on the first optimizer step and ddla on the first evaluation. Not the
#: user's ``__main__``: each agent imports it itself, as a spawned one does (a script must
#: guard its ``ddla.launch`` with ``if __name__ == "__main__"`` either way).
PRELOAD = ["ddla.warm_preload"]

#: ``DDLA_WARM=0`` falls back to spawned agents (each imports everything itself).
ENV = "DDLA_WARM"

_started = False  # by this module: stop() leaves a forkserver someone else started alone


def enabled() -> bool:
    """Whether agents are forked from the warm server (default) or spawned."""
    forkserver = "forkserver" in multiprocessing.get_all_start_methods()  # not on Windows
    return forkserver and os.environ.get(ENV, "1") != "0"


def start() -> None:
    """Start the warm server now (idempotent), so its imports overlap the caller's work.

    Returns at once: the server imports :data:`PRELOAD` in its own process."""
    global _started
    if not enabled():
        return
    from multiprocessing import forkserver

    multiprocessing.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
    _started = True


def stop() -> None:
    """Stop the warm server if this process started one that will not be used (another
    engine, or the fault-tolerant supervisor, starts the agents)."""
    global _started
    if not _started:
        return
    from multiprocessing import forkserver

    server = forkserver._forkserver  # the stdlib keeps no public handle on it
    if getattr(server, "_forkserver_pid", None) is not None and hasattr(server, "_stop"):
        server._stop()
    _started = False


def start_method() -> str:
    """The start method for the elastic launcher: ``forkserver`` when warm, else ``spawn``."""
    if enabled():
        start()
        return "forkserver"
    return "spawn"


@dataclass(frozen=True)
class LauncherContext:
    """The launcher's process state that a forked agent would otherwise not see."""

    env: dict[str, str]
    cwd: str
    path: list[str]
    stdio: _Stdio | None = None

    @classmethod
    def capture(cls) -> LauncherContext:
        return cls(env=dict(os.environ), cwd=os.getcwd(), path=list(sys.path), stdio=_Stdio())

    def apply(self) -> None:
        """Make this process's environment the launcher's, keeping what the elastic agent
        set for this worker (RANK, LOCAL_RANK, MASTER_PORT, ...): those are the variables whose
        values differ from the ones the server started with."""
        preloaded = sys.modules.get("ddla.warm_preload")
        if preloaded is None:  # the server could not preload it: add, never drop, variables
            for key, value in self.env.items():
                os.environ.setdefault(key, value)
        else:
            worker = {k: v for k, v in os.environ.items() if preloaded.SERVER_ENV.get(k) != v}
            os.environ.clear()
            os.environ.update(self.env)
            os.environ.update(worker)
        os.chdir(self.cwd)
        sys.path[:] = self.path
        if preloaded is not None and self.stdio is not None:
            self.stdio.apply(preloaded.SERVER_STDIO)


class _Stdio:
    """The launcher's stdout and stderr, sent to a forked agent with the process (pickled
    while the process starts, the file descriptors travel over the forkserver's socket)."""

    def __init__(self, fds: dict[int, int] | None = None) -> None:
        self.fds = fds  # in the agent: launcher's stream -> its copy received here

    def __reduce__(self) -> tuple[Any, ...]:
        from multiprocessing.reduction import DupFd

        return (_Stdio._received, ({fd: DupFd(fd) for fd in (1, 2)},))

    @staticmethod
    def _received(dups: dict[int, Any]) -> _Stdio:
        return _Stdio({fd: dup.detach() for fd, dup in dups.items()})

    def apply(self, server: dict[int, tuple[int, int]]) -> None:
        """Point each stream that is still the server's own at the launcher's; a stream the
        elastic agent redirected to a log file stays redirected."""
        for fd, received in (self.fds or {}).items():
            if _identity(fd) == server.get(fd):
                os.dup2(received, fd)
            os.close(received)


def _identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def call(context: LauncherContext | None, fn: Callable[..., T], *args: Any) -> T:
    """The agents' entry point: apply ``context`` (when forked), then ``fn(*args)``."""
    if context is not None:
        context.apply()
    return fn(*args)
