"""Imported once by the warm server (:mod:`ddla.warm`) before it forks any agent.

Everything an agent would import on its way to the first step and the first evaluation, and
the server's own environment and streams as it started (to tell, in a forked agent, what the
elastic agent set for that worker).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

from ddla.warm import _identity

SERVER_ENV: dict[str, str] = dict(os.environ)


#: The server's stdout/stderr (device, inode): a forked agent's stream that is still one of
#: these was not redirected by the elastic agent, so it gets the launcher's instead.
SERVER_STDIO: dict[int, tuple[int, int] | None] = {fd: _identity(fd) for fd in (1, 2)}

# Imported for their side effect: loaded modules that forked agents inherit.
import torch  # noqa: E402
import torch._dynamo  # noqa: E402, F401  # the first Optimizer.step imports it (torch.optim)
import torchmetrics.classification  # noqa: E402, F401  # the evaluator's first evaluation

import ddla.agent  # noqa: E402, F401


def _exit_without_teardown() -> None:
    # The server ends when its launcher goes (EOF on its alive pipe -> SystemExit). Tearing
    # down an interpreter with torch, dynamo and torchmetrics loaded takes 1-2 s, during which
    # it still holds the launcher's stdout/stderr: a caller reading them through a pipe
    # (`ddla run ... | tee`, subprocess.run(capture_output=True)) waited that long after ddla
    # had exited. Registered last, so it runs first at exit; the forked agents never run it
    # (a forkserver child always ends with os._exit).
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # None, closed, broken
            stream.flush()
    os._exit(0)


def _imported_by_the_forkserver() -> bool:
    """Whether this import is the forkserver's preload (not a test or a user importing it:
    there an os._exit would replace the process's exit status)."""
    from multiprocessing import forkserver

    frame = sys._getframe()
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            return True
        frame = frame.f_back
    return False


if _imported_by_the_forkserver():
    atexit.register(_exit_without_teardown)
