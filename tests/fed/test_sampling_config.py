"""Client sampling (reproducible, uniform), config refusals, NaN rejection, weighted mean."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ddla.comm import Transport
from ddla.compute import FederatedRound
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.fed import FedConfig, assign, sample_clients
from ddla.sync import SyncConfig, build_strategy


def test_sampling_reproducible_and_uniform() -> None:
    a = [sample_clients(round_=r, clients=100, fraction=0.1, seed=3) for r in range(400)]
    b = [sample_clients(round_=r, clients=100, fraction=0.1, seed=3) for r in range(400)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(len(x) == 10 and len(set(x.tolist())) == 10 for x in a)
    assert not np.array_equal(a[0], sample_clients(round_=0, clients=100, fraction=0.1, seed=4))
    counts = np.bincount(np.concatenate(a), minlength=100)  # expected 40 each
    chi2 = float(((counts - 40) ** 2 / 40).sum())
    assert chi2 < 150, chi2  # 99 dof: p(chi2 > 150) < 0.001


def test_assign_round_robin_covers_once() -> None:
    parts = assign(list(range(7)), world=3)
    assert parts == [[0, 3, 6], [1, 4], [2, 5]]


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        (["sync.strategy=fedavg"], "needs fed.clients"),
        (["fed.clients=10"], "needs a federated sync.strategy"),
        (["sync.strategy=fedsgd", "fed.clients=10"], "fedsgd is E=1, B=inf"),
        (["sync.strategy=fedavg", "fed.clients=10", "fed.fraction=0.2", "fed.aggregate=krum:1"],
         "needs at least 5"),
        (["sync.strategy=fedavg", "fed.clients=10", "fed.fraction=1", "fed.aggregate=median",
          "security.enabled=true", "security.secure_aggregation=true"],
         "cannot run with security.secure_aggregation"),
        (["fed.fraction=0"], "fed.fraction"),
    ],
)  # fmt: skip
def test_config_refusals(sets: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RunConfig.load(None, sets)


def test_pathological_partition_alias() -> None:
    from ddla.data import partition

    labels = np.repeat(np.arange(10), 30)
    parts = partition("pathological:2", labels, 50, 0)
    assert len(parts) == 50 and all(len(set(labels[p].tolist())) <= 2 for p in parts)


def _round(fed: FedConfig, clients, x, y, lr=0.1):
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], 2)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    t = Transport.single()
    s = build_strategy(SyncConfig(strategy="fedavg"), transport=t, model=model, optimizer=opt)
    r = FederatedRound(strategy=s, optimizer=opt, loss=torch.nn.functional.cross_entropy,
                       x=x, y=y, clients=clients, fed=fed)  # fmt: skip
    return r, model, t


def test_weighted_mean_exact_by_hand() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 3, generator=gen), torch.randint(0, 2, (30,), generator=gen)
    clients = [np.arange(0, 5), np.arange(5, 30)]  # n = 5 and 25
    fed = FedConfig(clients=2, fraction=1.0, batch=0, epochs=1)
    r, model, t = _round(fed, clients, x, y)
    w0 = [p.detach().clone() for p in model.parameters()]
    r(0)
    # By hand: each client one full-batch SGD step from w0; global = (5 w_0' + 25 w_1') / 30.
    ends = []
    for idx in clients:
        m = torch.nn.Linear(3, 2)
        with torch.no_grad():
            for p, q in zip(m.parameters(), w0, strict=True):
                p.copy_(q)
        loss = torch.nn.functional.cross_entropy(m(x[idx]), y[idx])
        grads = torch.autograd.grad(loss, list(m.parameters()))
        ends.append([q - 0.1 * g for q, g in zip(w0, grads, strict=True)])
    for got, a, b in zip(model.parameters(), *ends, strict=True):
        torch.testing.assert_close(got.detach(), (5 * a + 25 * b) / 30)
    t.close()


def test_nan_update_rejected_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    x = torch.randn(20, 3)
    x[10:] = float("nan")  # client 1's data poisons its update
    y = torch.randint(0, 2, (20,))
    clients = [np.arange(0, 10), np.arange(10, 20)]
    fed = FedConfig(clients=2, fraction=1.0, batch=0)
    r, model, t = _round(fed, clients, x, y)
    with caplog.at_level(logging.WARNING, logger="ddla.fed"):
        r(0)
    assert "client 1 update rejected" in caplog.text
    assert r.history[-1]["rejected"] == [1]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    t.close()


def test_issue_spellings_are_aliases() -> None:
    # Issue 13's `fedprox:MU` and `fault.byzantine` mean ddla's fedprox + fed.mu, fed.byzantine.
    c = RunConfig.load(overrides=["sync.strategy=fedprox:0.25", "fed.clients=10",
                                  "fault.byzantine=2:scale:-5"])  # fmt: skip
    assert (c.sync.strategy, c.fed.mu, c.fed.byzantine) == ("fedprox", 0.25, "2:scale:-5")
    assert c.fault.max_restarts == 0  # the fault section keeps its own settings
    same = RunConfig.load(overrides=["sync.strategy=fedprox:0.25", "fed.mu=0.25",
                                     "fed.clients=10"])  # fmt: skip
    assert same.fed.mu == 0.25


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        (["sync.strategy=fedprox:0.1", "fed.mu=0.2"], "disagree"),
        (["sync.strategy=fedprox:x"], "MU must be a number"),
        (["fault.byzantine=1:signflip", "fed.byzantine=2:signflip"], "disagree"),
        (["sync.strategy=fedavg:0.1"], "strategy"),  # only fedprox takes an argument
    ],
)
def test_issue_spellings_refusals(sets: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RunConfig.load(overrides=[*sets, "fed.clients=10"])
