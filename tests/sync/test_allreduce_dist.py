"""allreduce over 2 and 4 real gloo agents equals one process that sees the same global batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddla.agent import train
from ddla.config import RunConfig
from ddla.data import AgentBatches, partition
from ddla.job import Job, job_from_config
from ddla.testing import run_agents

STEPS = 12
OVERRIDES = [
    "data.dataset=digits",
    "data.batch_size=16",
    "data.partition=dirichlet:0.5",
    "model.hidden=32",
    "optim.name=sgd",
    "optim.lr=0.1",
    "optim.momentum=0.0",
    "optim.schedule=constant",
    f"train.steps={STEPS}",
    "train.eval_every=0",
]


def _config(out: Path, world: int) -> RunConfig:
    return RunConfig.load(None, [*OVERRIDES, f"agents={world}", f"out={out}"])


def _agent(transport, out: str) -> dict[str, torch.Tensor]:
    config = _config(Path(out), transport.world_size)
    job = job_from_config(config)
    train(job, config, transport, progress=False)
    return {k: v.clone() for k, v in job.model.state_dict().items()}


def _reference(config: RunConfig, world: int) -> dict[str, torch.Tensor]:
    """Plain single-process SGD on the concatenation of every agent's batch."""
    job: Job = job_from_config(config)
    x, y = job.train
    parts = partition(config.data.partition, y, world, config.train.seed)
    streams = [
        AgentBatches(p, batch_size=config.data.batch_size, seed=config.train.seed, rank=r)
        for r, p in enumerate(parts)
    ]
    opt = torch.optim.SGD(job.model.parameters(), lr=config.optim.lr)
    for step in range(STEPS):
        idx = torch.cat([torch.from_numpy(s.batch(step)) for s in streams])
        opt.zero_grad()
        torch.nn.functional.cross_entropy(job.model(x[idx]), y[idx]).backward()
        opt.step()
    return job.model.state_dict()


@pytest.mark.dist
@pytest.mark.parametrize("world", [2, 4])
def test_allreduce_matches_single_process_reference(tmp_path: Path, world: int) -> None:
    states = run_agents(_agent, world, str(tmp_path))
    for state in states[1:]:  # every agent ends with identical parameters
        for k in state:
            assert torch.equal(state[k], states[0][k]), k
    ref = _reference(_config(tmp_path, world), world)
    for k, v in ref.items():
        torch.testing.assert_close(states[0][k], v, rtol=1e-5, atol=1e-6)
    # and the shared work moved bytes: the run directory has a complete summary
    assert (tmp_path / "summary.json").is_file()
