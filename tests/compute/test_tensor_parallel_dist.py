"""Tensor-parallel layers over real gloo agents equal the unsplit layers.

Unit: a column- then row-parallel pair on two agents gives the unsplit pair's output, input
gradient and (joined) weight gradients. Whole loop: ``model.tensor_parallel=2`` trains digits
to the same parameters as plain SGD of the whole model, and the training bytes in the summary
equal a hand count of the Megatron all-reduces.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from plain_sgd import digits_sgd, reference
from torch import nn

from ddla.agent import train
from ddla.compute.tensor_parallel import parallel_pairs, shard_dims, shard_sequential
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.job import job_from_config
from ddla.models import load_model
from ddla.testing import run_agents

STEPS = 6
BATCH = 16
HIDDEN = 32


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 3))


def _pair_agent(transport) -> dict[str, torch.Tensor]:
    shard = shard_sequential(_mlp(), transport=transport)
    torch.manual_seed(1)
    x = torch.randn(5, 6, requires_grad=True)
    out = shard(x)
    (out * torch.arange(3.0)).sum().backward()
    grads = {f"{n}.grad": p.grad.clone() for n, p in shard.named_parameters()}
    return {"out": out.detach(), "x.grad": x.grad.clone(), **grads}


def test_pairs_and_split_dims() -> None:
    model = _mlp()
    assert parallel_pairs(model) == [("0", "2")]
    dims = shard_dims(model, 2)
    assert dims == {"0.weight": 0, "0.bias": 0, "2.weight": 1, "2.bias": None,
                    "4.weight": None, "4.bias": None}  # fmt: skip
    with pytest.raises(ConfigError, match="does not divide the 8 features"):
        shard_dims(model, 3)
    with pytest.raises(ConfigError, match="two Linear layers"):
        shard_dims(nn.Sequential(nn.Linear(3, 3)), 2)


@pytest.mark.dist
def test_column_row_pair_equals_the_unsplit_layers() -> None:
    results = run_agents(_pair_agent, 2, timeout_s=120)
    model = _mlp()
    torch.manual_seed(1)
    x = torch.randn(5, 6, requires_grad=True)
    out = model(x)
    (out * torch.arange(3.0)).sum().backward()
    for r in results:  # every shard sees the whole output and input gradient
        torch.testing.assert_close(r["out"], out.detach())
        torch.testing.assert_close(r["x.grad"], x.grad)
    dims = shard_dims(model, 2)
    for name, p in model.named_parameters():
        pieces = [r[f"{name}.grad"] for r in results]
        dim = dims[name]
        got = torch.cat(pieces, dim=dim) if dim is not None else pieces[0]
        torch.testing.assert_close(got, p.grad, msg=name)
        if dim is None:  # a replicated parameter gets the same gradient on every shard
            torch.testing.assert_close(pieces[1], pieces[0])


BASE = digits_sgd(
    "model.depth=3",
    "model.tensor_parallel=2",
    steps=STEPS,
    batch=BATCH,
    hidden=HIDDEN,
)


def _loop_agent(transport, out: str) -> dict | None:
    config = RunConfig.load(None, [*BASE, "agents=2", f"out={out}"])
    return train(job_from_config(config), config, transport, progress=False)


@pytest.mark.dist
def test_tensor_parallel_run_equals_the_unsplit_model(tmp_path: Path) -> None:
    summary = run_agents(_loop_agent, 2, str(tmp_path), timeout_s=300)[0]
    config = RunConfig.load(None, [*BASE, "agents=2", f"out={tmp_path}"])
    want = reference(config, STEPS)
    exported, _ = load_model(tmp_path / "model.safetensors")
    torch.testing.assert_close(dict(exported.state_dict()), dict(want))
    # Hand count (2 agents: a ring all-reduce of B bytes sends B per agent). Pairs (1, 3) and
    # (5, 7) of Linears 64-32-32-32-10: forward sums layer 3's (B, 32) and layer 7's (B, 10)
    # outputs; backward sums layer 5's (B, 32) input gradient (layer 1's input is data).
    per_agent = STEPS * BATCH * (32 + 10 + 32) * 4
    assert summary["comm"]["bytes_sent"] == 2 * per_agent
    assert summary["decomposition"]["tensor_parallel"] == 2


def _hybrid_agent(transport, out: str) -> dict:
    config = RunConfig.load(None, [*BASE, "agents=4", f"out={out}", "sync.strategy=allreduce"])
    job = job_from_config(config)
    summary = train(job, config, transport, progress=False)
    return {"summary": summary}


@pytest.mark.dist
@pytest.mark.slow
def test_two_replicas_of_two_shards_equal_the_unsplit_model(tmp_path: Path) -> None:
    summary = run_agents(_hybrid_agent, 4, str(tmp_path), timeout_s=400)[0]["summary"]
    config = RunConfig.load(None, [*BASE, "agents=4", f"out={tmp_path}"])
    want = reference(config, STEPS, replicas=2)
    exported, _ = load_model(tmp_path / "model.safetensors")
    torch.testing.assert_close(dict(exported.state_dict()), want)
    roles = [(a["replica"], a["shard"]) for a in summary["decomposition"]["agents"]]
    assert roles == [(0, 0), (0, 1), (1, 0), (1, 1)]
