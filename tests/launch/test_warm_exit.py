"""The warm server ends without the interpreter teardown, and only the server does.

A server that tore down torch, dynamo and torchmetrics held the launcher's stdout/stderr for
1-2 s after ddla had exited, so a caller reading ddla's output through a pipe waited for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

# A module whose global's __del__ runs only in the interpreter teardown, writing a marker.
MARKER_MOD = """
import os
class _OnTeardown:
    def __del__(self, _open=open, _path=os.environ["MARKER"]):
        with _open(_path, "w") as f:
            f.write("teardown ran")
KEEP = _OnTeardown()
"""

# Starts a forkserver with the given preload, forks one process, prints the server's pid.
PROG = """
import multiprocessing as mp, sys
from multiprocessing import forkserver
def noop():
    pass
if __name__ == "__main__":
    mp.set_start_method("forkserver")
    mp.set_forkserver_preload(sys.argv[1].split(","))
    p = mp.Process(target=noop)
    p.start()
    p.join()
    assert p.exitcode == 0
    print(forkserver._forkserver._forkserver_pid, flush=True)
"""


def _server_teardown_ran(tmp_path: Path, preload: str) -> bool:
    (tmp_path / "marker_mod.py").write_text(MARKER_MOD)
    (tmp_path / "prog.py").write_text(textwrap.dedent(PROG))
    marker = tmp_path / "marker"
    env = dict(os.environ, MARKER=str(marker), PYTHONPATH=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "prog.py"), preload],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.split()[-1])
    deadline = time.monotonic() + 120  # liveness only: the server goes with its launcher
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the server outlived its launcher"
    return marker.exists()


def test_the_warm_server_skips_the_teardown(tmp_path: Path) -> None:
    assert not _server_teardown_ran(tmp_path, "ddla.warm_preload,marker_mod")


def test_a_plain_forkserver_tears_down_so_the_check_can_fail(tmp_path: Path) -> None:
    assert _server_teardown_ran(tmp_path, "marker_mod")


def test_importing_the_preload_elsewhere_keeps_the_exit_status() -> None:
    code = "import sys, ddla.warm_preload; sys.exit(3)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
