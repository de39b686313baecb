"""The language-model workload through the CLI: run (diloco, int4) on a text: corpus, the
LM summary and report, ddla eval with perplexity, ddla partition by document, misfits refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from e2e_helpers import cli

pytestmark = [pytest.mark.e2e, pytest.mark.dist, pytest.mark.slow]

LM = [
    "agents=2",
    "model.name=gpt",
    "model.hidden=16",
    "model.layers=1",
    "model.heads=2",
    "data.context=16",
    "data.batch_size=4",
    "train.eval_every=10",
    "sync.strategy=diloco",
    "sync.every=5",
    "sync.compress=int4",
]


def _corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(4):
        (root / f"doc{i}.txt").write_text(f"document {i}: " + "the quick brown fox. " * 60)
    return root


@pytest.mark.timeout(900)  # three CLI processes; minutes each on a loaded 2-core machine
def test_cli_lm_run_eval_partition(tmp_path: Path, no_leftover_processes) -> None:
    corpus, out = _corpus(tmp_path), tmp_path / "run"
    sets = [a for kv in [*LM, f"data.dataset=text:{corpus}"] for a in ("--set", kv)]
    res = cli("run", *sets, "--steps", "20", "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "perplexity" in res.stdout and "precision" not in res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "lm" and summary["partition"] == "contiguous"
    assert set(summary["final"]) == {"loss", "perplexity", "accuracy"}
    assert summary["final"]["loss"] < math.log(256)  # learned something in 20 steps
    assert [f["path"] for f in summary["data_info"]["files"]] == [f"doc{i}.txt" for i in range(4)]
    assert (out / "report.html").is_file() and "perplexity" in (out / "report.html").read_text()
    res = cli("eval", str(out / "model.safetensors"))
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if "perplexity" in ln)
    assert float(line.split()[-2]) == pytest.approx(summary["final"]["perplexity"], rel=1e-3)
    res = cli("partition", "--dataset", f"text:{corpus}", "--agents", "2")
    assert res.returncode == 0, res.stderr
    assert "doc0.txt" in res.stdout and "doc3.txt" in res.stdout


def test_cli_lm_refuses_label_skew(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    sets = [a for kv in [*LM, f"data.dataset=text:{corpus}"] for a in ("--set", kv)]
    res = cli("run", *sets, "--set", "data.partition=dirichlet:0.5", "--out", str(tmp_path / "r"))
    assert res.returncode != 0
    assert "does not fit a language-model dataset" in res.stderr
