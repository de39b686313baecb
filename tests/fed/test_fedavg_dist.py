"""FedAvg over real gloo agents: equals local SGD in the paper's degenerate case; robust rules
agree on every agent; an end-to-end ``ddla`` run in federated mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import ddla
from ddla.comm import Transport
from ddla.compute import FederatedRound
from ddla.data import partition
from ddla.fed import FedConfig
from ddla.sync import SyncConfig, build_strategy
from ddla.testing import run_agents


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.data[:240] / 16.0, dtype=torch.float32)
    return x, torch.tensor(d.target[:240], dtype=torch.long)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))


def _agent(transport: Transport, rounds: int, aggregate: str) -> dict[str, list[torch.Tensor]]:
    x, y = _data()
    world = transport.world_size
    loss = torch.nn.functional.cross_entropy
    out = {}
    # FedAvg: one client per agent, C = 1, E = 1, B = whole shard.
    clients = partition("iid", y.numpy(), world, 0)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    s = build_strategy(SyncConfig(strategy="fedavg"), transport=transport, model=model,
                       optimizer=opt)  # fmt: skip
    fed = FedConfig(clients=world, fraction=1.0, epochs=1, batch=0, aggregate=aggregate)
    r = FederatedRound(strategy=s, optimizer=opt, loss=loss, x=x, y=y, clients=clients, fed=fed)
    for k in range(rounds):
        r(k)
    out["fed"] = [p.detach().clone() for p in model.parameters()]
    s.close()
    # local_sgd with H = one epoch of the shard (one full-batch step), same shard per agent.
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    s = build_strategy(SyncConfig(strategy="local_sgd", every=1), transport=transport,
                       model=model, optimizer=opt)  # fmt: skip
    idx = torch.from_numpy(clients[transport.rank])
    for _ in range(rounds):
        opt.zero_grad()
        loss(model(x[idx]), y[idx]).backward()
        opt.step()
    s.finish()
    out["local_sgd"] = [p.detach().clone() for p in model.parameters()]
    s.close()
    return out


def test_fedavg_c1_e1_full_batch_equals_local_sgd_one_epoch() -> None:
    res = run_agents(_agent, 2, 3, "mean", timeout_s=300)
    for r in res:
        for a, b in zip(r["fed"], r["local_sgd"], strict=True):
            torch.testing.assert_close(a, b)
    for a, b in zip(res[0]["fed"], res[1]["fed"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_median_of_two_agents_is_their_mean_and_agents_agree() -> None:
    # With two updates the median is their mean: equals the weighted mean (equal shards).
    res = run_agents(_agent, 2, 2, "median", timeout_s=300)
    for r in res:
        for a, b in zip(r["fed"], r["local_sgd"], strict=True):
            torch.testing.assert_close(a, b)
    for a, b in zip(res[0]["fed"], res[1]["fed"], strict=True):
        assert torch.equal(a, b)


def test_ddla_run_fedavg_digits(tmp_path: Path) -> None:
    summary = ddla.launch(
        overrides=[
            "agents=2", "data.dataset=digits", "sync.strategy=fedavg", "fed.clients=20",
            "fed.fraction=0.25", "fed.epochs=1", "fed.batch=10", "optim.lr=0.1",
            "data.partition=pathological:2", "train.steps=15", "train.eval_every=5",
            f"out={tmp_path}",
        ],
        progress=False,
    )  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # Between rounds every agent holds the global model, so intermediate evaluations measure it
    # once (no per-agent evaluation, no parameter all-reduce); the final one evaluates every
    # agent's own model too, and each equals the merged model exactly.
    glob = {r["step"]: r for r in rows if r["agent"] == "global"}
    assert sorted(glob) == [5, 10, 15] and all("accuracy" in r for r in glob.values())
    agents = [r for r in rows if isinstance(r["agent"], int)]
    assert all("accuracy" not in r for r in agents if r["step"] < 15)
    final = [r for r in agents if r["step"] == 15]
    assert len(final) == 2
    assert all(r["accuracy"] == glob[15]["accuracy"] for r in final), (final, glob[15])
    assert all(r["loss"] == pytest.approx(glob[15]["loss"], rel=1e-6) for r in final)
    fedsum = summary["federated"]
    assert fedsum["rounds"] == 15
    assert all(h["clients"] == 5 for h in fedsum["per_round"])
    assert sum(h["trained_here"] for h in fedsum["per_round"]) == 15 * 3  # rank 0: 3 of 5
    assert summary["final"]["accuracy"] > 0.5, summary["final"]
    assert np.isfinite(summary["final"]["accuracy"])


def test_intermediate_global_eval_split_over_agents_equals_full_evaluation(
    tmp_path: Path,
) -> None:
    # Intermediate federated evaluations score the global model on one slice of the test set
    # per agent and merge the confusion matrices; a run stopped at that round evaluates its
    # final model the ordinary way (parameter all-reduce, rank 0 scores the whole test set
    # with torchmetrics). Same seed and constant lr: the same model, so the same metrics.
    def run(steps: int, out: Path) -> dict:
        ddla.launch(
            overrides=[
                "agents=2", "data.dataset=digits", "sync.strategy=fedavg", "fed.clients=10",
                "fed.fraction=0.5", "fed.batch=10", "optim.lr=0.1", "optim.schedule=constant",
                f"train.steps={steps}", "train.eval_every=2", f"out={out}",
            ],
            progress=False,
        )  # fmt: skip
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r for r in rows if r["agent"] == "global"}

    longer, stopped = run(4, tmp_path / "a"), run(2, tmp_path / "b")
    mid, ref = longer[2], stopped[2]
    assert mid["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-7), (mid, ref)
    for key in ("loss", "precision", "recall", "f1"):
        assert mid[key] == pytest.approx(ref[key], rel=1e-5), key
