"""Pipeline stages over real gloo agents equal the unsplit model trained in one process.

Agents hold one stage each of an MLP on digits. After k steps through the whole agent loop,
the stages' parameters, joined, equal plain SGD of the whole model on the same batches
(``torch.testing.assert_close``) for GPipe and 1F1B, the exported model is that model, and the
training bytes in the summary equal a hand count of activations, their gradients and the
replicas' gradient all-reduce. Replicas of a stage hold identical parameters; a resumed run
ends bitwise equal to a straight one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from plain_sgd import digits_sgd, reference

from ddla.agent import train
from ddla.config import RunConfig
from ddla.job import job_from_config
from ddla.models import load_model
from ddla.models.decompose import plan_stages
from ddla.testing import run_agents

STEPS = 6
BATCH = 16
HIDDEN = 32
BASE = digits_sgd(steps=STEPS, batch=BATCH, hidden=HIDDEN)
# Digits MLP 64-32-32-10 cut by parameter count: stage 0 = Flatten, Linear(64, 32), ReLU
# (2080 parameters), stage 1 = Linear(32, 32), ReLU, Linear(32, 10) (1386).
STAGE_PARAMS = (2080, 1386)


def _config(out: Path, world: int, extra: list[str]) -> RunConfig:
    return RunConfig.load(None, [*BASE, *extra, f"agents={world}", f"out={out}"])


def _train(transport, out: Path, extra: list[str], **kwargs) -> dict:
    config = _config(out, transport.world_size, extra)
    job = job_from_config(config)
    transport.stats.reset()
    summary = train(job, config, transport, progress=False, **kwargs)
    # The stage this agent trained: its layers are the job model's own modules.
    stage = transport.rank % config.model.stages
    mine = plan_stages(job.model, config.model.stages, config.model.split)[stage]
    state = {k: v.clone() for k, v in job.model.state_dict().items() if k.split(".")[0] in mine}
    return {"summary": summary, "state": state}


def _agent(transport, out: str, runs: list[list[str]]) -> list[dict]:
    return [_train(transport, Path(out) / str(i), extra) for i, extra in enumerate(runs)]


SCHEDULES = [
    ["model.stages=2", "model.microbatches=4", "model.schedule=gpipe"],
    ["model.stages=2", "model.microbatches=4", "model.schedule=1f1b"],
]


@pytest.mark.dist
def test_two_stages_equal_the_unsplit_model_for_both_schedules(tmp_path: Path) -> None:
    by_rank = run_agents(_agent, 2, str(tmp_path), SCHEDULES, timeout_s=300)
    for i, extra in enumerate(SCHEDULES):
        out = tmp_path / str(i)
        results = [by_rank[0][i], by_rank[1][i]]
        want = reference(_config(out, 2, extra), STEPS)
        assert set(results[0]["state"]).isdisjoint(results[1]["state"])  # one stage each
        got = {**results[0]["state"], **results[1]["state"]}
        torch.testing.assert_close(got, want, msg=lambda m, e=extra: f"{e}: {m}")
        # The exported model is the assembled whole model.
        exported, _ = load_model(out / "model.safetensors")
        torch.testing.assert_close(dict(exported.state_dict()), want)
        # Hand count: stage 0 sends each microbatch's (micro, HIDDEN) fp32 activations, stage
        # 1 their gradients back; nothing else is training traffic (one replica: no sync).
        summary = results[0]["summary"]
        per_step = BATCH * HIDDEN * 4
        assert summary["comm"]["bytes_sent"] == 2 * STEPS * per_step
        assert summary["comm"]["bytes_received"] == 2 * STEPS * per_step
        assert summary["pipeline_bytes_sent"] == {"activations": STEPS * per_step, "gradients": 0}
        assert summary["decomposition"]["stages"] == 2
        agents = summary["decomposition"]["agents"]  # each holds only its stage's parameters
        assert [a["parameter_bytes"] for a in agents] == [4 * n for n in STAGE_PARAMS]
        assert [a["pipeline_bytes_sent"]["gradients"] for a in agents] == [0, STEPS * per_step]
        assert summary["throughput"]["samples_per_s"] > 0


HYBRID = ["model.stages=2", "model.microbatches=2", "sync.strategy=allreduce"]
# DiLoCo between the replicas of each stage, every 3 steps, int8-compressed pseudo-gradients.
DILOCO = ["model.stages=2", "model.microbatches=2", "sync.strategy=diloco", "sync.every=3",
          "sync.compress=int8", "optim.name=adamw", "optim.lr=0.003"]  # fmt: skip


@pytest.mark.dist
def test_two_replicas_of_two_stages_with_allreduce_and_diloco(tmp_path: Path) -> None:
    by_rank = run_agents(_agent, 4, str(tmp_path), [HYBRID, DILOCO], timeout_s=500)
    for run in (0, 1):  # ranks 0, 1: replica 0's stages; 2, 3: replica 1's
        results = [r[run] for r in by_rank]
        for stage in (0, 1):  # replicas of a stage hold the very same parameters after a sync
            a, b = results[stage]["state"], results[2 + stage]["state"]
            assert a and all(torch.equal(a[k], b[k]) for k in a)
        sync = results[0]["summary"]["comm"]["bytes_sent"]
        assert sync > 0
    results = [r[0] for r in by_rank]
    want = reference(_config(tmp_path / "0", 4, HYBRID), STEPS, replicas=2)
    torch.testing.assert_close({**results[0]["state"], **results[1]["state"]}, want)
    # Hand count per step: each replica's activations and their gradients (B * HIDDEN fp32
    # each way), plus each stage's gradients all-reduced by its two replicas (a 2-agent ring
    # all-reduce of B bytes sends B per agent).
    per_step = 2 * 2 * BATCH * HIDDEN * 4 + 2 * 4 * sum(STAGE_PARAMS)
    assert results[0]["summary"]["comm"]["bytes_sent"] == STEPS * per_step


RESUME = ["model.stages=2", "model.microbatches=2", "model.schedule=1f1b",
          "train.checkpoint_every=2", "optim.momentum=0.9"]  # fmt: skip


def _resume_agent(transport, out: str) -> tuple[dict, dict]:
    straight = _train(transport, Path(out) / "a", RESUME)
    _train(transport, Path(out) / "b", [*RESUME, "train.steps=4"])
    resumed = _train(transport, Path(out) / "b", RESUME, resume=True)
    return straight["state"], resumed["state"]


@pytest.mark.dist
def test_a_resumed_pipeline_is_bitwise_the_straight_run(tmp_path: Path) -> None:
    for straight, resumed in run_agents(_resume_agent, 2, str(tmp_path), timeout_s=300):
        assert straight and straight.keys() == resumed.keys()
        for k in straight:
            assert torch.equal(straight[k], resumed[k]), k
