"""The CLI end to end: run, the summary contract, eval, logs; failures leave nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_helpers import FAST, ROOT, cli, descendants

import ddla
from ddla.errors import AgentFailedError
from ddla.testing import KILL_EXIT_CODE, FaultInjector

pytestmark = [pytest.mark.e2e, pytest.mark.dist]

SUMMARY_KEYS = {
    "strategy",
    "agents",
    "dataset",
    "model",
    "partition",
    "seed",
    "steps",
    "final",
    "comm",
    "time",
    "model_path",
}


def test_cli_run_then_eval(tmp_path: Path, no_leftover_processes) -> None:
    out = tmp_path / "run"
    sets = [a for kv in FAST for a in ("--set", kv)]
    res = cli("run", *sets, "--steps", "40", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "accuracy" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert set(summary["final"]) == {"accuracy", "precision", "recall", "f1", "loss"}
    assert summary["final"]["accuracy"] > 0.6
    per_agent = summary["comm"]["per_agent"]
    assert [a["rank"] for a in per_agent] == [0, 1]
    assert summary["comm"]["bytes_sent"] == sum(a["bytes_sent"] for a in per_agent) > 0
    assert {"wall_s", "compute_s", "comm_s"} <= summary["time"].keys()
    assert (out / "logs" / "agent0.log").is_file() and (out / "logs" / "agent1.log").is_file()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {row["agent"] for row in lines} == {0, 1, "global"}
    assert [r["step"] for r in lines if r["agent"] == "global"] == [10, 20, 30, 40]
    res = cli("eval", str(out / "model.safetensors"))
    assert res.returncode == 0, res.stderr
    shown = float(re.search(r"accuracy\s*│\s*([\d.]+)%", res.stdout).group(1)) / 100
    assert shown == pytest.approx(summary["final"]["accuracy"], abs=1e-4)


def test_resume_is_bitwise_identical(tmp_path: Path, no_leftover_processes) -> None:
    from safetensors.torch import load_file

    # constant: a cosine schedule follows train.steps, which the resume extends from 10 to 20
    base = [
        *FAST,
        "train.checkpoint_every=10",
        "data.partition=dirichlet:0.5",
        "optim.schedule=constant",
    ]
    whole = ddla.launch(
        overrides=[*base, "train.steps=20", f"out={tmp_path / 'a'}"], progress=False
    )
    ddla.launch(overrides=[*base, "train.steps=10", f"out={tmp_path / 'b'}"], progress=False)
    resumed = ddla.launch(resume=tmp_path / "b", overrides=["train.steps=20"], progress=False)
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), f"{k} differs after resume"
    assert resumed["final"] == whole["final"]
    assert resumed["comm"]["bytes_sent"] == whole["comm"]["bytes_sent"]
    # the resumed run's metrics continue where the checkpoint left off, with no duplicates
    a_lines, b_lines = ((tmp_path / d / "metrics.jsonl").read_text().splitlines() for d in "ab")
    assert [json.loads(x)["step"] for x in b_lines] == [json.loads(x)["step"] for x in a_lines]


def test_dead_agent_fails_cleanly(tmp_path: Path, no_leftover_processes) -> None:
    out = tmp_path / "run"
    faults = FaultInjector().kill(rank=1, at_step=5)
    with pytest.raises(AgentFailedError) as info:
        ddla.launch(
            overrides=[
                *FAST,
                "train.steps=50",
                "train.checkpoint_every=2",
                f"out={out}",
                "comm.timeout_s=20",
            ],
            faults=faults,
            progress=False,
        )
    # The dead agent is named first, with the exit code it died with, not its peer's error.
    message = str(info.value)
    assert message.startswith(f"agent 1 died (exit code {KILL_EXIT_CODE})"), message
    assert "\n" not in message and "agent1.log" in (info.value.help or "")
    assert not (out / "summary.json").exists()
    assert not (out / "model.safetensors").exists()
    # The checkpoints written before the death are intact: the run resumes and finishes.
    resumed = ddla.launch(resume=out, progress=False)
    assert resumed["steps"] == 50 and (out / "model.safetensors").is_file()


def test_ctrl_c_stops_every_agent(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ddla.cli",
            "run",
            *[a for kv in FAST for a in ("--set", kv)],
            "--steps",
            "1000000",
            "--out",
            str(out),
            "--no-progress",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    # Training is under way once the first evaluation row is on disk (FAST: every 10 steps).
    metrics = out / "metrics.jsonl"
    while not (metrics.is_file() and metrics.read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.5)
    pids = descendants(proc.pid)
    assert len(pids) >= 2  # the agents are running
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in err and "error:" in err

    def running(pid: int) -> bool:
        try:
            return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
        except OSError:  # gone (possibly between two reads)
            return False

    def alive() -> list[int]:
        return [p for p in pids if running(p)]

    # The launcher has exited; its agents may still be in their exit hooks for a moment.
    deadline = time.monotonic() + 30
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(), f"agents left running after Ctrl-C: {alive()}"
    assert not (out / "summary.json").exists()
