"""``model.split=time``: stages balanced by measured forward + backward time per layer.

A deliberately skewed model (a parameter-free layer that costs ~30 Linear layers) is cut
where the time balances, not where the parameter count does; the agents of a run agree on
one set of times, so on one plan; and a whole run with ``model.split=time`` trains the same
model as plain SGD of the unsplit one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from plain_sgd import digits_sgd, reference
from torch import nn

from ddla.agent import train
from ddla.config import RunConfig
from ddla.job import job_from_config
from ddla.models import load_model
from ddla.models.decompose import plan_stages
from ddla.models.profile import agreed_layer_times, layer_times
from ddla.testing import run_agents

WIDTH = 256


class Slow(nn.Module):
    """No parameters, the work of ~30 Linear layers: 30 products with a fixed matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("m", torch.randn(WIDTH, WIDTH) / WIDTH**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(30):
            x = torch.tanh(x @ self.m)
        return x


def _skewed() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*(nn.Linear(WIDTH, WIDTH) if i != 1 else Slow() for i in range(5)))


def _stage_max(plan: list[list[str]], times: list[float]) -> float:
    return max(sum(times[int(n)] for n in stage) for stage in plan)


def test_a_time_split_balances_a_skewed_model() -> None:
    torch.set_num_threads(1)
    model = _skewed()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    times = layer_times(model, torch.randn(16, WIDTH))
    assert times[1] > 5 * max(times[0], *times[2:])  # the skew is real
    by_params = plan_stages(model, 2)  # equal Linears: two either side of the free layer
    assert by_params == [["0", "1", "2"], ["3", "4"]]
    by_time = plan_stages(model, 2, "time", times=times)
    assert by_time == [["0", "1"], ["2", "3", "4"]]  # the slow layer shares with one Linear
    assert _stage_max(by_time, times) < _stage_max(by_params, times)
    # Timing left the model as it was.
    assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(dict(model.state_dict()), before, rtol=0, atol=0)


def _agree(transport) -> tuple[list[float], list[list[str]]]:
    torch.set_num_threads(1)
    times = agreed_layer_times(_skewed(), torch.randn(16, WIDTH), transport)
    return times, plan_stages(_skewed(), 2, "time", times=times)


@pytest.mark.dist
def test_agents_agree_on_one_time_split() -> None:
    results = run_agents(_agree, 2, timeout_s=200)
    assert results[0] == results[1]  # bit for bit the same times, so the same plan
    assert results[0][1] == [["0", "1"], ["2", "3", "4"]]


BASE = digits_sgd("model.stages=2", "model.microbatches=2", "model.split=time", steps=4)


def _loop(transport, out: str) -> dict:
    config = RunConfig.load(None, [*BASE, "agents=2", f"out={out}"])
    return train(job_from_config(config), config, transport, progress=False)


@pytest.mark.dist
def test_a_time_split_run_equals_the_unsplit_model(tmp_path: Path) -> None:
    summary = run_agents(_loop, 2, str(tmp_path), timeout_s=300)[0]
    assert summary["decomposition"]["split"] == "time"
    want = reference(RunConfig.load(None, [*BASE, "agents=2", f"out={tmp_path}"]), 4)
    exported, _ = load_model(tmp_path / "model.safetensors")
    torch.testing.assert_close(dict(exported.state_dict()), want)
