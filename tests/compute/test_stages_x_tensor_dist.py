"""Pipeline stages whose Linear pairs are split over tensor-parallel agents, in one run.

Four real gloo agents: 1 replica x 2 stages x 2 shards of a digits MLP. Every stage's pairs
are split over its two shards; shard t of each stage forms one pipeline. The exported model
equals plain SGD of the whole model on the same batches, and the training bytes equal a hand
count of activations, their gradients and the Megatron all-reduces.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from plain_sgd import digits_sgd, reference

from ddla.agent import train
from ddla.compute.tensor_parallel import parallel_pairs
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.job import job_from_config
from ddla.models import ModelConfig, build_model, load_model
from ddla.models.decompose import plan_stages

STEPS = 6
BATCH = 16
HIDDEN = 32
BASE = digits_sgd(
    "model.stages=2",
    "model.tensor_parallel=2",
    "model.microbatches=2",
    "model.schedule=1f1b",
    "model.depth=3",
    steps=STEPS,
    batch=BATCH,
    hidden=HIDDEN,
)


def _mlp() -> torch.nn.Module:
    # 0 Flatten, 1 Linear(64, 32), 2 ReLU, 3 Linear(32, 32), 4 ReLU, 5 Linear(32, 32), 6 ReLU,
    # 7 Linear(32, 10): pairs (1, 3) and (5, 7).
    return build_model(ModelConfig(hidden=HIDDEN, depth=3), input_shape=(64,), num_classes=10)


def test_stages_are_cut_between_tensor_parallel_pairs() -> None:
    model = _mlp()
    pairs = parallel_pairs(model)
    assert pairs == [("1", "3"), ("5", "7")]
    plan = plan_stages(model, 2, keep=pairs)
    assert plan == [["0", "1", "2", "3", "4"], ["5", "6", "7"]]
    # Without pairs to keep, parameter balance alone would cut between 1 and 3.
    assert plan_stages(model, 2)[1][0] == "3"
    with pytest.raises(ConfigError, match="3 is inside a tensor-parallel pair") as info:
        plan_stages(model, 2, "3", keep=pairs)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="only 4 places to start a stage"):
        plan_stages(model, 5, keep=pairs)


def _agent(transport, out: str) -> dict:
    config = RunConfig.load(None, [*BASE, "agents=4", f"out={out}"])
    transport.stats.reset()
    return train(job_from_config(config), config, transport, progress=False)


@pytest.mark.dist
def test_two_stages_of_two_shards_equal_the_unsplit_model(tmp_path: Path) -> None:
    from ddla.testing import run_agents

    summary = run_agents(_agent, 4, str(tmp_path), timeout_s=400)[0]
    config = RunConfig.load(None, [*BASE, "agents=4", f"out={tmp_path}"])
    want = reference(config, STEPS)
    exported, _ = load_model(tmp_path / "model.safetensors")
    torch.testing.assert_close(dict(exported.state_dict()), want)
    dec = summary["decomposition"]
    assert (dec["replicas"], dec["stages"], dec["tensor_parallel"]) == (1, 2, 2)
    roles = [(a["stage"], a["shard"]) for a in dec["agents"]]
    assert roles == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # Hand count per step (fp32; a 2-agent ring all-reduce of n bytes sends n per agent):
    # - two pipelines (one per shard), each moving the (B, 32) output of layer 4 forward and
    #   its gradient back;
    # - stage 0's pair (1, 3): layer 3's (B, 32) output summed forward (layer 1's input is
    #   data: no backward all-reduce), on both of its agents;
    # - stage 1's pair (5, 7): layer 7's (B, 10) output forward and layer 5's (B, 32) input
    #   gradient backward, on both of its agents.
    per_step = 4 * BATCH * (2 * 2 * HIDDEN + 2 * HIDDEN + 2 * (10 + HIDDEN))
    assert summary["comm"]["bytes_sent"] == STEPS * per_step
    sent = [a["pipeline_bytes_sent"] for a in dec["agents"]]
    act = STEPS * BATCH * HIDDEN * 4
    assert (
        sent
        == [{"activations": act, "gradients": 0}] * 2 + [{"activations": 0, "gradients": act}] * 2
    )
    # Each agent holds half of its stage's pair weights.
    params = [a["parameter_bytes"] // 4 for a in dec["agents"]]
    stage0 = (64 * 32 + 32 * 32) // 2 + 32 // 2 + 32  # column bias split, row bias whole
    stage1 = (32 * 32 + 32 * 10) // 2 + 32 // 2 + 10
    assert params == [stage0, stage0, stage1, stage1]
