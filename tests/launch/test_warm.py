"""Agents forked from the warm server see the launcher as it is now, and train the same model.

The server (``ddla/warm.py``) is started once per launching process and reused, so it holds
the environment, working directory, ``sys.path`` and stdout of the moment it started; every
agent it forks must get the launcher's current ones instead, as a spawned agent would.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import ddla

pytestmark = pytest.mark.dist

FAST = ["agents=2", "data.dataset=digits", "model.hidden=32", "train.eval_every=5"]


def probe_job() -> ddla.Job:
    """Runs in every agent: record what the agent sees, then a tiny digits job."""
    rank = os.environ["RANK"]
    parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    seen = {
        "marker": os.environ.get("DDLA_WARM_TEST"),
        "cwd": os.getcwd(),
        "path": os.environ["DDLA_WARM_TEST_PATH"] in sys.path,
        "forked_by_server": b"multiprocessing.forkserver" in parent,
        "world": os.environ["WORLD_SIZE"],
    }
    Path(os.environ["DDLA_WARM_TEST_OUT"], f"seen{rank}.json").write_text(json.dumps(seen))
    if rank == "0":
        print("probe-job-stdout-marker", flush=True)  # rank 0's stdout is the console
    ds = ddla.data.load_dataset("digits")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    return ddla.Job(model=model, train=(ds.x_train, ds.y_train), test=(ds.x_test, ds.y_test))


def test_a_reused_server_forks_agents_that_see_the_launcher_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # A first run starts the server (or finds it running from an earlier test).
    ddla.launch(overrides=[*FAST, "train.steps=2", f"out={tmp_path / 'first'}"], progress=False)
    capfd.readouterr()
    # Everything below changed after the server started.
    here, extra = tmp_path / "cwd", tmp_path / "extra"
    here.mkdir()
    extra.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.syspath_prepend(str(extra))
    monkeypatch.setenv("DDLA_WARM_TEST", "set-after-the-server-started")
    monkeypatch.setenv("DDLA_WARM_TEST_PATH", str(extra))
    monkeypatch.setenv("DDLA_WARM_TEST_OUT", str(tmp_path))
    ddla.launch(
        probe_job, overrides=[*FAST, "train.steps=2", f"out={tmp_path / 'run'}"], progress=False
    )
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"seen{rank}.json").read_text())
        assert seen == {
            "marker": "set-after-the-server-started",
            "cwd": str(here),
            "path": True,
            "forked_by_server": True,
            "world": "2",  # the elastic agent's own variables survive the launcher's
        }, rank
    assert "probe-job-stdout-marker" in capfd.readouterr().out


def test_forked_and_spawned_agents_train_the_same_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = [*FAST, "train.steps=10", "sync.strategy=diloco", "sync.every=5"]
    ddla.launch(overrides=[*job, f"out={tmp_path / 'warm'}"], progress=False)
    monkeypatch.setenv("DDLA_WARM", "0")
    ddla.launch(overrides=[*job, f"out={tmp_path / 'spawned'}"], progress=False)
    warm = load_file(tmp_path / "warm" / "model.safetensors")
    spawned = load_file(tmp_path / "spawned" / "model.safetensors")
    assert warm.keys() == spawned.keys()
    for name in warm:
        assert torch.equal(warm[name], spawned[name]), name
    finals = [
        json.loads((tmp_path / d / "summary.json").read_text())["final"]
        for d in ("warm", "spawned")
    ]
    assert finals[0] == finals[1]
