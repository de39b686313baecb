"""Decomposed runs through the CLI: ``ddla run`` with pipeline stages then ``ddla eval`` of the
assembled model, the same under two torchrun nodes, and a bad layout refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import FAST, ROOT, cli, torchrun_nodes

pytestmark = [pytest.mark.e2e, pytest.mark.dist]

PIPE = ["model.stages=2", "model.microbatches=4", "model.schedule=1f1b"]


def test_pipeline_run_then_eval_of_the_assembled_model(
    tmp_path: Path, no_leftover_processes
) -> None:
    out = tmp_path / "run"
    sets = [a for kv in [*FAST, *PIPE] for a in ("--set", kv)]
    res = cli("run", *sets, "--steps", "60", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    layout = {k: v for k, v in summary["decomposition"].items() if k not in ("agents", "plan")}
    assert layout == {
        "replicas": 1, "stages": 2, "tensor_parallel": 1, "microbatches": 4,
        "schedule": "1f1b", "split": "auto",
    }  # fmt: skip
    assert len(summary["decomposition"]["plan"]) == 2  # each stage's layer names
    stages = [a["stage"] for a in summary["decomposition"]["agents"]]
    assert stages == [0, 1]
    assert summary["final"]["accuracy"] > 0.5  # one replica: half the samples of FAST
    sent = summary["pipeline_bytes_sent"]
    assert sent["activations"] > 0 and summary["comm"]["bytes_sent"] > sent["activations"]
    res = cli("eval", str(out / "model.safetensors"))
    assert res.returncode == 0, res.stderr
    shown = f"{100 * summary['final']['accuracy']:.2f}%"
    assert shown in res.stdout  # the exported model is the one the run evaluated


def test_a_bad_layout_is_refused_in_one_line(tmp_path: Path) -> None:
    res = cli("run", "--agents", "3", "--set", "model.stages=2", "--out", str(tmp_path / "r"))
    assert res.returncode != 0
    assert "agents=3 cannot form replicas of model.stages=2" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


@pytest.mark.slow
def test_two_torchrun_nodes_hold_one_stage_each(tmp_path: Path, no_leftover_processes) -> None:
    out = tmp_path / "run"
    sets = [a for kv in [*FAST, *PIPE, "train.steps=30"] for a in ("--set", kv)]
    torchrun_nodes("-m", "ddla.agent", *sets, "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decomposition"]["stages"] == 2 and summary["steps"] == 30
    assert summary["final"]["accuracy"] > 0.5


def test_pipeline_example_with_named_split_points(tmp_path: Path, no_leftover_processes) -> None:
    res = subprocess.run(
        [sys.executable, "examples/custom_model.py", "--agents", "2", "--stages", "2",
         "--split", "hidden2", "--steps", "60", "--out", str(tmp_path / "pipe")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=400, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert float(res.stdout.split("accuracy")[1].split()[0]) > 0.7
    summary = json.loads((tmp_path / "pipe" / "summary.json").read_text())
    assert summary["model"] == "custom" and summary["decomposition"]["split"] == "hidden2"
    assert [a["stage"] for a in summary["decomposition"]["agents"]] == [0, 1]


@pytest.mark.slow
def test_the_python_api_pipeline_under_two_torchrun_nodes(
    tmp_path: Path, no_leftover_processes
) -> None:
    """``ddla.Job`` with the user's nn.Sequential and a named split point, one stage per
    torchrun node (the README's two-machine command, on loopback)."""
    out = tmp_path / "api"
    example = ["examples/custom_model.py", "--stages", "2", "--split", "hidden2", "--steps", "60"]
    torchrun_nodes(*example, "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    dec = summary["decomposition"]
    assert dec["split"] == "hidden2" and dec["plan"][1][0] == "hidden2"
    assert [a["stage"] for a in dec["agents"]] == [0, 1] and summary["model"] == "custom"
    assert summary["final"]["accuracy"] > 0.7
