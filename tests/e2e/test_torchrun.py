"""The same agent entry point under torchrun: two `--nnodes 2` invocations on this machine,
and the Python API example under the local launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import FAST, ROOT, torchrun_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.dist]


def test_two_torchrun_nodes_form_one_run(tmp_path: Path, no_leftover_processes) -> None:
    out = tmp_path / "run"
    sets = [a for kv in [*FAST, "train.steps=30"] for a in ("--set", kv)]
    torchrun_nodes("-m", "ddla.agent", *sets, "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["agents"] == 2 and summary["steps"] == 30
    assert summary["final"]["accuracy"] > 0.5
    assert all(a["bytes_sent"] > 0 for a in summary["comm"]["per_agent"])
    assert (out / "logs" / "agent0.log").is_file() and (out / "logs" / "agent1.log").is_file()


def test_python_api_example(tmp_path: Path, no_leftover_processes) -> None:
    res = subprocess.run(
        [sys.executable, "examples/custom_model.py", "--agents", "2", "--steps", "60",
         "--out", str(tmp_path / "custom")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=400, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    accuracy = float(res.stdout.split("accuracy")[1].split()[0])
    assert accuracy > 0.8
    summary = json.loads((tmp_path / "custom" / "summary.json").read_text())
    assert summary["model"] == "custom" and summary["agents"] == 2
