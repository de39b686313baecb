"""``ddla run`` with per-agent sources end to end: per-site rows, the report, timing, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from e2e_helpers import cli

from ddla.data import load_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.dist]


def _sites(tmp: Path) -> str:
    ds = load_dataset("digits", seed=0)
    y, yt = ds.y_train.numpy(), ds.y_test.numpy()
    for rank, (lo, hi) in enumerate([(0, 6), (3, 9)]):  # site 1 lacks classes 0-2
        keep, keep_t = (y >= lo) & (y <= hi), (yt >= lo) & (yt <= hi)
        np.savez(
            tmp / f"site-{rank}.npz",
            x_train=ds.x_train.numpy()[keep],
            y_train=y[keep],
            x_test=ds.x_test.numpy()[keep_t],
            y_test=yt[keep_t],
        )
    return f"data.source=npz:{tmp}/site-{{rank}}.npz"


def test_cli_run_with_per_agent_sources(tmp_path: Path, no_leftover_processes) -> None:
    source, out = _sites(tmp_path), tmp_path / "run"
    args = ["--agents", "2", "--steps", "20", "--eval-every", "10", "--no-progress"]
    res = cli("run", *args, "--set", source, "--out", str(out), "--timing")
    assert res.returncode == 0, res.stderr
    assert "start-up" in res.stdout and "rendezvous" in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [s["site"] for s in summary["sites"]] == [0, 1]
    assert summary["data"]["counts"][1][:3] == [0, 0, 0]
    assert summary["time"]["startup_s"] > 0 and "rendezvous" in summary["time"]["startup"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["agent"] for r in rows} == {0, 1, "site0", "site1", "global"}
    page = (out / "report.html").read_text()
    assert 'id="sites"' in page and 'id="histogram"' in page
    assert str(tmp_path / "site-1.npz") in page


def test_cli_run_refuses_a_missing_site_before_starting_agents(tmp_path: Path) -> None:
    source = _sites(tmp_path)
    (tmp_path / "site-1.npz").unlink()
    res = cli("run", "--agents", "2", "--set", source, "--out", str(tmp_path / "r"))
    assert res.returncode != 0
    assert f"agent 1: data.source file {tmp_path / 'site-1.npz'} does not exist" in res.stderr


def test_cli_no_report_writes_the_result_only(tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = ["--agents", "2", "--dataset", "digits", "--steps", "2", "--no-progress"]
    res = cli("run", *args, "--out", str(out), "--no-report")
    assert res.returncode == 0, res.stderr
    assert (out / "summary.json").is_file() and (out / "model.safetensors").is_file()
    assert not (out / "report.html").exists()
