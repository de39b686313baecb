"""Ray, Spark and Dask start the same agents as the local launcher, with the same results.

Every engine runs for real in its local mode (a local Ray instance, a local Spark session with
TorchDistributor, a Dask LocalCluster), 2 agents on digits, and must reproduce the local
launcher's run bit for bit: the same seed gives the same final parameters, metrics and bytes.
A killed agent must end the run with ddla's one-line error and leave no process behind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from e2e_helpers import FAST, cli, descendants
from safetensors.torch import load_file

import ddla
from ddla.errors import DdlaError
from ddla.launch.spark import java_missing
from ddla.testing import FaultInjector

pytestmark = [pytest.mark.e2e, pytest.mark.dist]

STEPS = 20
JOBS = {
    "allreduce": [*FAST, f"train.steps={STEPS}", "train.checkpoint_every=10"],
    "diloco": [
        *FAST,
        f"train.steps={STEPS}",
        "sync.strategy=diloco",
        "sync.every=5",
        "data.partition=dirichlet:0.5",
    ],
}


def _engine(name: str):
    """A test parameter that skips when the engine (or Spark's Java) is not installed."""
    marks = [pytest.mark.skipif(not _installed(name), reason=f"ddla[{name}] not installed")]
    if name == "spark":
        marks.append(pytest.mark.skipif(java_missing() is not None, reason="no Java runtime"))
    return pytest.param(name, marks=marks, id=name)


def _installed(name: str) -> bool:
    import importlib.util

    module = {"ray": "ray.train", "spark": "pyspark", "dask": "distributed"}[name]
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


ENGINES = [_engine(name) for name in ("ray", "spark", "dask")]


def _wait_for_no_descendants(grace_s: float = 60.0) -> list[int]:
    """Our live descendants once the engine had ``grace_s`` to finish its own teardown."""
    deadline = time.monotonic() + grace_s
    while (left := descendants(os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory) -> dict[str, Path]:
    """The local launcher's runs: the reference every engine must reproduce."""
    root = tmp_path_factory.mktemp("local")
    for name, job in JOBS.items():
        ddla.launch(overrides=[*job, f"out={root / name}"], progress=False)
    return {name: root / name for name in JOBS}


def _assert_same_run(run: Path, ref: Path) -> None:
    a = load_file(str(run / "model.safetensors"))
    b = load_file(str(ref / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs")
    got, want = (json.loads((d / "summary.json").read_text()) for d in (run, ref))
    assert got["final"] == want["final"]
    assert got["comm"]["bytes_sent"] == want["comm"]["bytes_sent"]
    assert got["agents"] == 2 and got["steps"] == STEPS

    def curve(d: Path) -> list[tuple]:
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [(r["agent"], r["step"], r.get("accuracy"), r.get("loss")) for r in rows]

    assert curve(run) == curve(ref)
    assert (run / "report.html").is_file()
    assert (run / "logs" / "agent0.log").is_file() and (run / "logs" / "agent1.log").is_file()
    ckpts = (
        sorted(p.name for p in (ref / "checkpoints").glob("step_*"))
        if (ref / "checkpoints").is_dir()
        else []
    )
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ckpts


@pytest.mark.parametrize("engine", ENGINES)
def test_allreduce_matches_local(engine: str, local_runs, tmp_path: Path) -> None:
    out = tmp_path / engine
    summary = ddla.launch(
        overrides=[*JOBS["allreduce"], f"out={out}"], launcher=engine, progress=False
    )
    assert summary["final"]["accuracy"] > 0.3
    _assert_same_run(out, local_runs["allreduce"])
    assert "engine: " + engine in (out / "config.yaml").read_text()
    assert not _wait_for_no_descendants(), "engine processes left behind"


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_diloco_matches_local_cli(engine: str, local_runs, tmp_path: Path) -> None:
    out = tmp_path / engine
    sets = [a for kv in JOBS["diloco"] for a in ("--set", kv)]
    res = cli("run", "--launcher", engine, *sets, "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    _assert_same_run(out, local_runs["diloco"])


@pytest.mark.parametrize("engine", ENGINES)
def test_dead_agent_ends_the_run_cleanly(engine: str, tmp_path: Path) -> None:
    out = tmp_path / engine
    faults = FaultInjector().kill(rank=1, at_step=5)
    with pytest.raises(DdlaError) as info:
        ddla.launch(
            overrides=[*FAST, "train.steps=200", f"out={out}", "comm.timeout_s=30"],
            launcher=engine,
            faults=faults,
            progress=False,
        )
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert "agent" in message and info.value.help
    assert not (out / "summary.json").exists()
    assert not _wait_for_no_descendants(), "engine processes left behind"
