"""Pipeline stages over real gloo agents equal the unsplit model trained in one process.

Two agents hold one stage each of an MLP on digits; after k steps of GPipe or 1F1B (4
microbatches) through the whole agent loop, the stages' parameters, joined, equal plain SGD
of the whole model on the same batches (``torch.testing.assert_close``), the exported model
is that model, and the training bytes in the summary equal a hand count of activations and
their gradients.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddla.agent import train
from ddla.config import RunConfig
from ddla.data import AgentBatches, partition
from ddla.job import job_from_config
from ddla.models import load_model
from ddla.models.decompose import plan_stages
from ddla.testing import run_agents

STEPS = 6
BATCH = 16
HIDDEN = 32
BASE = [
    "data.dataset=digits",
    "data.partition=iid",
    f"data.batch_size={BATCH}",
    f"model.hidden={HIDDEN}",
    "optim.name=sgd",
    "optim.lr=0.1",
    "optim.momentum=0.0",
    "optim.schedule=constant",
    f"train.steps={STEPS}",
    "train.eval_every=0",
    "train.eval_agents=false",
]


def _config(out: Path, world: int, extra: list[str]) -> RunConfig:
    return RunConfig.load(None, [*BASE, *extra, f"agents={world}", f"out={out}"])


def _agent(transport, out: str, extra: list[str]) -> dict:
    config = _config(Path(out), transport.world_size, extra)
    job = job_from_config(config)
    summary = train(job, config, transport, progress=False)
    # The stage this agent trained: its layers are the job model's own modules.
    stage = transport.rank % config.model.stages
    mine = plan_stages(job.model, config.model.stages, config.model.split)[stage]
    state = {k: v.clone() for k, v in job.model.state_dict().items() if k.split(".")[0] in mine}
    return {"summary": summary, "state": state}


def reference(config: RunConfig, replicas: int = 1) -> dict[str, torch.Tensor]:
    """Plain single-process SGD of the whole model on every replica's batch, concatenated."""
    job = job_from_config(config)
    x, y = job.train
    parts = partition(config.data.partition, y.numpy(), replicas, config.train.seed)
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
@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_two_stages_equal_the_unsplit_model(tmp_path: Path, schedule: str) -> None:
    extra = ["model.stages=2", "model.microbatches=4", f"model.schedule={schedule}"]
    results = run_agents(_agent, 2, str(tmp_path), extra, timeout_s=300)
    want = reference(_config(tmp_path, 2, extra))
    got = {**results[0]["state"], **results[1]["state"]}
    assert set(results[0]["state"]).isdisjoint(results[1]["state"])  # one stage each
    assert sorted(got) == sorted(want)
    torch.testing.assert_close(got, dict(want))
    # The exported model is the assembled whole model.
    exported, _ = load_model(tmp_path / "model.safetensors")
    torch.testing.assert_close(dict(exported.state_dict()), dict(want))
    # Hand count: stage 0 sends each microbatch's (micro, HIDDEN) fp32 activations forward,
    # stage 1 their gradients back; nothing else is training traffic (one replica: no sync).
    summary = results[0]["summary"]
    per_step = BATCH * HIDDEN * 4
    assert summary["comm"]["bytes_sent"] == 2 * STEPS * per_step
    assert summary["comm"]["bytes_received"] == 2 * STEPS * per_step
    assert summary["pipeline_bytes_sent"] == {"activations": STEPS * per_step, "gradients": 0}
    assert summary["decomposition"]["stages"] == 2
