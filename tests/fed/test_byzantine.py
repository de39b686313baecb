"""The Byzantine test bed over real gloo agents: 4 of 20 clients send ``scale:-5`` updates; the
mean collapses to chance while the robust rules keep most of the honest accuracy."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from ddla.comm import Transport
from ddla.compute import FederatedRound
from ddla.data import partition
from ddla.fed import FedConfig
from ddla.sync import SyncConfig, build_strategy
from ddla.testing import run_agents

ROUNDS = 6


def _accuracy(transport: Transport, aggregate: str, byzantine: str) -> dict[str, object]:
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    (xt, yt), (x, y) = (x[1400:], y[1400:]), (x[:1400], y[:1400])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = build_strategy(SyncConfig(strategy="fedavg"), transport=transport, model=model,
                       optimizer=opt)  # fmt: skip
    fed = FedConfig(clients=20, fraction=1.0, batch=10, aggregate=aggregate, byzantine=byzantine)
    rnd = FederatedRound(strategy=s, optimizer=opt, loss=torch.nn.functional.cross_entropy, x=x,
                         y=y, clients=partition("iid", y.numpy(), 20, 0), fed=fed)  # fmt: skip
    for r in range(ROUNDS):
        rnd(r)
    s.close()
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
    return {"accuracy": acc, "malicious": sorted(rnd.malicious)}


def _agent(transport: Transport, runs: list[tuple[str, str]]) -> dict[tuple[str, str], object]:
    torch.set_num_threads(1)  # two agents on a shared 2-core machine: one thread each
    return {run: _accuracy(transport, *run) for run in runs}


def _check(res: list[dict]) -> dict[tuple[str, str], float]:
    assert res[0] == res[1]  # both agents hold the same model
    return {k: v["accuracy"] for k, v in res[0].items()}


@pytest.mark.dist
def test_median_holds_where_mean_collapses_under_scaling() -> None:
    runs = [("mean", "4:scale:-5"), ("median", "4:scale:-5")]
    acc = _check(run_agents(_agent, 2, runs, timeout_s=600))
    assert acc[runs[0]] < 0.2, acc  # 10 classes: chance is 0.1
    assert acc[runs[1]] > 0.45, acc


@pytest.mark.dist
@pytest.mark.slow
def test_robust_rules_against_each_attack() -> None:
    attacks = ["4:signflip", "4:scale:-5", "4:gaussian:1"]
    rules = ["mean", "median", "trimmed_mean:0.2", "bulyan:4"]
    runs = [("mean", ""), *[(r, a) for a in attacks for r in rules]]
    acc = _check(run_agents(_agent, 2, runs, timeout_s=1200))
    assert acc[("mean", "")] > 0.6, acc
    assert acc[("mean", "4:scale:-5")] < 0.2, acc
    # After 6 rounds the robust rules trail the attack-free run (20% of the clients attack
    # every round); how close they get with more rounds is benchmarks/byzantine.py's record.
    for a in attacks:
        for r in rules[1:]:
            assert acc[(r, a)] > 0.45, (r, a, acc)
            assert acc[(r, a)] > acc[("mean", "4:scale:-5")] + 0.3, (r, a, acc)
