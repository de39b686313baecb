"""Leave the ``ddla`` process without Python's interpreter teardown once its work is done.

Once torch, dynamo and torchmetrics are loaded, the interpreter's own teardown (clearing
thousands of modules, running their C++ destructors) takes 0.5-1 s of a short run's wall
time and does nothing for the user: the run's files are written and closed by then. This
runs what a normal exit runs for the program — every ``atexit`` hook (Ray's and Dask's clients,
multiprocessing's finalizers, the warm agent server's stop, ``logging.shutdown``) and a flush
of stdout/stderr — and then ends the process with ``os._exit``.

Only the console script uses it (``ddla.cli.main``); ``ddla.launch`` from a user's script and
the in-process CLI in tests exit the normal way::

    from ddla.fast_exit import exit_now
    exit_now(0)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn


def _code(code: object) -> int:
    """``SystemExit.code`` as the process status ``sys.exit`` would give it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits 1
    return 1


def exit_now(code: object = 0) -> NoReturn:
    """Exit with ``code`` after the atexit hooks, skipping the interpreter's teardown.

    Falls back to ``sys.exit`` when torch was never imported (``ddla --help``: nothing to skip)
    or a non-daemon thread is still running (a normal exit would wait for it; so do we).
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if "torch" not in sys.modules or any(not t.daemon for t in others):
        sys.exit(code)
    status = _code(code)
    # A normal exit joins non-daemon threads (none, checked above), runs the atexit hooks, then
    # tears the interpreter down: only that last part is skipped. `_run_exitfuncs` is the
    # underscored entry CPython's atexit module has always had for running the hooks now.
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed or broken pipe: there is nothing more to write there.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
