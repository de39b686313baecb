"""`python -m ddla.agent` (the entry torchrun runs) imports cleanly: the package must not import
its own entry module first, or runpy warns in every agent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_agent_module_runs_without_runtime_warning() -> None:
    res = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "ddla.agent", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "RuntimeWarning" not in res.stderr
    assert "usage: python -m ddla.agent" in res.stdout.lower()
