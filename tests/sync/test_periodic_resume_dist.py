"""DiLoCo through the agent loop: a run resumed from a checkpoint (inner AdamW state, outer
Nesterov state, global copy, error-feedback residuals) ends bitwise equal to a straight run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddla.agent import train
from ddla.config import RunConfig
from ddla.job import job_from_config
from ddla.testing import run_agents

OVERRIDES = [
    "data.dataset=digits",
    "data.batch_size=16",
    "model.hidden=16",
    "train.eval_every=0",
    "train.checkpoint_every=4",
    "optim.schedule=constant",  # the same rates whether the run is 8 or 11 steps long
    "sync.strategy=streaming_diloco",
    "sync.every=3",
    "sync.fragments=2",
    "sync.overlap=1",
    "sync.compress=topk:0.3+int8",
]


def _run(transport, out: str, steps: int, resume: bool) -> dict[str, torch.Tensor]:
    config = RunConfig.load(None, [*OVERRIDES, f"train.steps={steps}", f"out={out}"])
    job = job_from_config(config)
    transport.stats.reset()
    train(job, config, transport, resume=resume, progress=False)
    return {k: v.clone() for k, v in job.model.state_dict().items()}


def _agent(transport, straight: str, resumed: str):
    a = _run(transport, straight, 11, False)
    _run(transport, resumed, 8, False)  # checkpoints at 4 and 8 (before finish() at 8)
    b = _run(transport, resumed, 11, True)  # continues from step 8's checkpoint
    return a, b


@pytest.mark.dist
def test_streaming_diloco_resume_is_bitwise(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for straight, resumed in run_agents(_agent, 2, str(tmp_path / "a"), str(tmp_path / "b")):
        for k in straight:
            assert torch.equal(straight[k], resumed[k]), k
