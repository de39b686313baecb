"""The zoo's ``gpt`` split into pipeline stages (embedding + blocks | blocks + head).

Two real gloo agents train a 4-block GPT on a small text corpus, one stage each, with the
output projection untied (``model.tie=false``); the exported model and the loss of every
step equal a single process training the whole GPT on the same batches. Tied, the run is
refused in one line (the embedding and the head would be one weight on two agents).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from plain_sgd import reference

from ddla.agent import train
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.job import job_from_config
from ddla.models import load_model
from ddla.models.decompose import plan_stages
from ddla.testing import run_agents

STEPS = 4
LM = [
    "model.name=gpt", "model.hidden=16", "model.layers=4", "model.heads=2", "model.tie=false",
    "data.context=16", "data.batch_size=4", "data.partition=iid", "optim.name=sgd",
    "optim.lr=0.1", "optim.momentum=0.0", "optim.schedule=constant", f"train.steps={STEPS}",
    "train.eval_every=1", "train.eval_agents=false", "model.stages=2", "model.microbatches=2",
    "model.schedule=1f1b",
]  # fmt: skip


def _corpus(root: Path) -> Path:
    root.mkdir(exist_ok=True)
    for i in range(4):
        (root / f"doc{i}.txt").write_text(f"document {i}: " + "the quick brown fox. " * 40)
    return root


def _config(tmp: Path, agents: int) -> RunConfig:
    data = f"data.dataset=text:{tmp / 'corpus'}"
    return RunConfig.load(None, [*LM, data, f"agents={agents}", f"out={tmp / 'run'}"])


def _agent(transport, tmp: str) -> dict:
    config = _config(Path(tmp), 2)
    return train(job_from_config(config), config, transport, progress=False)


def test_gpt_layers_and_a_tied_gpt_refused_in_one_line(tmp_path: Path) -> None:
    _corpus(tmp_path / "corpus")
    job = job_from_config(_config(tmp_path, 2))
    assert plan_stages(job.model, 2) == [
        ["embed", "blocks.0", "blocks.1"], ["blocks.2", "blocks.3", "head"]
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="ties its output projection") as info:
        RunConfig.load(None, [*LM, "model.tie=true", "agents=2"])
    assert "\n" not in str(info.value) and "model.tie=false" in info.value.help


@pytest.mark.dist
def test_two_gpt_stages_equal_the_whole_gpt(tmp_path: Path) -> None:
    _corpus(tmp_path / "corpus")
    summary = run_agents(_agent, 2, str(tmp_path), timeout_s=300)[0]
    config = _config(tmp_path, 2)
    want = reference(config, STEPS)
    exported, _ = load_model(tmp_path / "run" / "model.safetensors")
    torch.testing.assert_close(dict(exported.state_dict()), want)
    # The test loss after every step (the assembled model's) equals the whole GPT's.
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    got = {r["step"]: r["loss"] for r in rows if r["agent"] == "global" and "loss" in r}
    assert sorted(got) == list(range(1, STEPS + 1))
    job = job_from_config(config)
    x_test, y_test = job.test
    want_loss: dict[int, float] = {}

    def test_loss(done: int, model: torch.nn.Module) -> None:
        metrics = job.task_spec.evaluate(model, x_test, y_test, num_classes=job.num_classes)
        want_loss[done] = metrics["loss"]

    reference(config, STEPS, after_step=test_loss)
    torch.testing.assert_close(got, want_loss)
    assert summary["decomposition"]["stages"] == 2
