"""``exit_now`` keeps what a normal exit does for the program: hooks, flushed output, status."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _run(body: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(body))
    cmd = [sys.executable, str(script)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_hooks_run_output_is_flushed_and_the_status_is_kept(tmp_path: Path) -> None:
    marker = tmp_path / "hook-ran"
    proc = _run(
        f"""
        import atexit, sys
        import torch  # the teardown worth skipping
        from ddla.fast_exit import exit_now
        atexit.register(lambda: open({str(marker)!r}, "w").write("ok"))
        sys.stdout.write("buffered, no newline")
        exit_now(3)
        """,
        tmp_path,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "buffered, no newline"
    assert marker.read_text() == "ok"


def test_a_message_exits_one_like_sys_exit(tmp_path: Path) -> None:
    proc = _run(
        """
        import torch
        from ddla.fast_exit import exit_now
        exit_now("went wrong")
        """,
        tmp_path,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "went wrong"


def test_a_running_thread_is_waited_for(tmp_path: Path) -> None:
    marker = tmp_path / "thread-done"
    proc = _run(
        f"""
        import threading, time
        import torch
        from ddla.fast_exit import exit_now
        def work():
            time.sleep(0.5)
            open({str(marker)!r}, "w").write("done")
        threading.Thread(target=work).start()
        exit_now(0)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert marker.read_text() == "done"


def test_the_console_script_keeps_its_exit_codes(tmp_path: Path) -> None:
    ddla = Path(sys.executable).with_name("ddla")
    bad = subprocess.run([str(ddla), "run", "--agents", "0"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "error:" in bad.stderr
    ok = subprocess.run([str(ddla), "--help"], capture_output=True, text=True)
    assert ok.returncode == 0
    assert "Usage" in ok.stdout
