"""The language-model workload over real gloo agents: allreduce equals one process on the
same global batches; DiLoCo (int4) and streaming DiLoCo agents agree after their last sync;
a resumed DiLoCo run is bitwise the straight one; summary.json reports the LM metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ddla.agent import train
from ddla.config import RunConfig
from ddla.data import AgentBatches, partition
from ddla.job import job_from_config
from ddla.metrics.lm import lm_cross_entropy
from ddla.testing import run_agents

STEPS = 6
BASE = [
    "data.dataset=python-stdlib",
    "data.context=16",
    "data.size=400",
    "data.batch_size=4",
    "model.name=gpt",
    "model.hidden=16",
    "model.layers=1",
    "model.heads=2",
    f"train.steps={STEPS}",
    "train.eval_every=3",
]
RUNS = {
    "allreduce": [
        "sync.strategy=allreduce",
        "optim.name=sgd",
        "optim.lr=0.5",
        "optim.momentum=0",
        "optim.schedule=constant",
    ],
    "diloco": ["sync.strategy=diloco", "sync.every=3", "sync.compress=int4"],
    "streaming": ["sync.strategy=streaming_diloco", "sync.every=3", "sync.fragments=3"],
}


def _config(out: Path, run: str, *extra: str) -> RunConfig:
    out.mkdir(parents=True, exist_ok=True)  # what launch() prepares
    return RunConfig.load(None, [*BASE, *RUNS[run], *extra, "agents=2", f"out={out}"])


def _state(job) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in job.model.state_dict().items()}


def _agent(transport, root: str, runs: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for run in runs:
        config = _config(Path(root) / run, run)
        job = job_from_config(config)
        transport.stats.reset()
        train(job, config, transport, progress=False)
        out[run] = _state(job)
    if "diloco" not in runs:
        return out
    # Resume: 4 steps with a checkpoint at 2, then continue to 6; equals the straight run.
    resumed = Path(root) / "resumed"
    for steps, resume in ((4, False), (STEPS, True)):
        config = _config(resumed, "diloco", "train.checkpoint_every=2", f"train.steps={steps}")
        job = job_from_config(config)
        transport.stats.reset()
        train(job, config, transport, resume=resume, progress=False)
    out["resumed"] = _state(job)
    return out


def _reference(config: RunConfig) -> dict[str, torch.Tensor]:
    """Single-process SGD on the concatenation of both agents' batches."""
    job = job_from_config(config)
    x, y = job.train
    parts = partition("contiguous", job.partition_labels, 2, config.train.seed)
    streams = [
        AgentBatches(p, batch_size=config.data.batch_size, seed=config.train.seed, rank=r)
        for r, p in enumerate(parts)
    ]
    opt = torch.optim.SGD(job.model.parameters(), lr=config.optim.lr)
    for step in range(STEPS):
        idx = torch.cat([torch.from_numpy(s.batch(step)) for s in streams])
        opt.zero_grad()
        lm_cross_entropy(job.model(x[idx]), y[idx]).backward()
        opt.step()
    return job.model.state_dict()


def _check_summary(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    final = summary["final"]
    assert summary["task"] == "lm" and summary["partition"] == "contiguous"
    assert set(final) == {"loss", "perplexity", "accuracy"}
    assert final["perplexity"] == pytest.approx(math.exp(final["loss"]), rel=1e-3)
    assert summary["throughput"]["tokens_per_s"] > 0
    assert len(summary["data_info"]["sha256"]) == 64
    assert summary["comm"]["bytes_sent"] > 0


@pytest.mark.dist
def test_lm_allreduce_matches_single_process_reference(tmp_path: Path) -> None:
    a, b = run_agents(_agent, 2, str(tmp_path), ["allreduce"], timeout_s=300)
    for k in a["allreduce"]:  # every agent ends with identical parameters
        assert torch.equal(a["allreduce"][k], b["allreduce"][k]), k
    ref = _reference(_config(tmp_path / "allreduce", "allreduce"))
    for k, v in ref.items():
        torch.testing.assert_close(a["allreduce"][k], v, rtol=1e-5, atol=1e-6)
    _check_summary(tmp_path / "allreduce")


@pytest.mark.dist
@pytest.mark.slow
def test_lm_diloco_streaming_agree_and_resume_bitwise(tmp_path: Path) -> None:
    a, b = run_agents(_agent, 2, str(tmp_path), ["diloco", "streaming"], timeout_s=600)
    for run in ["diloco", "streaming", "resumed"]:  # agents agree after the last sync (step 6)
        for k in a[run]:
            assert torch.equal(a[run][k], b[run][k]), (run, k)
    for k in a["diloco"]:
        assert torch.equal(a["diloco"][k], a["resumed"][k]), k
    for run in ["diloco", "streaming"]:
        _check_summary(tmp_path / run)
