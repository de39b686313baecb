"""The FedAvg family over real gloo agents against the independent replay (tests/fed/replay.py):
fedprox, fedavgm, fedadam, fedyogi, scaffold, each at settings where its option changes the
result (checked: the replay with the option off differs), so a broken formula fails."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from sklearn.datasets import load_digits

from ddla.comm import Transport
from ddla.compute import FederatedRound
from ddla.data import partition
from ddla.fed import FedConfig
from ddla.sync import SyncConfig, build_strategy
from ddla.testing import run_agents
from tests.fed.replay import Setting, replay

SETTINGS = {
    "fedprox": Setting("fedprox", mu=0.5),
    "fedavgm": Setting("fedavgm", momentum=0.9, server_lr=0.7),
    "fedadam": Setting("fedadam", server_lr=0.03, beta1=0.9, beta2=0.99, tau=1e-3),
    "fedyogi": Setting("fedyogi", server_lr=0.03, beta1=0.9, beta2=0.5, tau=1e-3, rounds=4),
    "scaffold": Setting("scaffold", server_lr=1.0),
}
#: The same run with the option switched off, which the option must change.
OFF = {
    "fedprox": ("fedavg", {"mu": 0.0}),
    "fedavgm": ("fedavgm", {"momentum": 0.0}),
    "fedadam": ("fedavg", {}),
    "fedyogi": ("fedadam", {}),
    "scaffold": ("fedavg", {}),
}
CLIENTS = 10


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.data[:600] / 16.0, dtype=torch.float32)
    return x, torch.tensor(d.target[:600], dtype=torch.long)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def _clients(y: torch.Tensor):
    return partition("pathological:2", y.numpy(), CLIENTS, 0)


def _fed(s: Setting) -> FedConfig:
    return FedConfig(
        clients=CLIENTS, fraction=s.fraction, epochs=s.epochs, batch=s.batch,
        server_lr=s.server_lr, mu=s.mu, server_momentum=s.momentum, beta1=s.beta1,
        beta2=s.beta2, tau=s.tau,
    )  # fmt: skip


def _agent(transport: Transport, names: list[str]) -> dict[str, object]:
    torch.set_num_threads(1)  # two agents on a shared 2-core machine: one thread each
    x, y = _data()
    clients = _clients(y)
    out: dict[str, object] = {}
    for name in names:
        s = SETTINGS[name]
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=s.lr)
        strat = build_strategy(SyncConfig(strategy=name), transport=transport, model=model,
                               optimizer=opt)  # fmt: skip
        rnd = FederatedRound(strategy=strat, optimizer=opt, loss=torch.nn.functional.cross_entropy,
                             x=x, y=y, clients=clients, fed=_fed(s))  # fmt: skip
        for r in range(s.rounds):
            rnd(r)
        out[name] = [p.detach().clone() for p in model.parameters()]
        if name == "scaffold":
            # SCAFFOLD's invariant: the server c is the mean of all M clients' c_i (on disk).
            mine = sum(
                (strat.client_variate(c) for c in range(transport.rank, CLIENTS,
                                                        transport.world_size)),
                torch.zeros(strat.dim),
            )  # fmt: skip
            transport.all_reduce(mine, op="sum")
            out["c_mean"], out["c"] = mine / CLIENTS, strat.c.clone()
            out["homes_ok"] = all(
                c % transport.world_size == transport.rank
                for r in range(s.rounds) for c in rnd.shares(rnd.sample(r))[transport.rank]
            )  # fmt: skip
        strat.close()
    return out


@pytest.fixture(scope="module")
def agents() -> list[dict[str, object]]:
    return run_agents(_agent, 2, list(SETTINGS), timeout_s=600)


def _replay(name: str, **change) -> list[torch.Tensor]:
    x, y = _data()
    s = dataclasses.replace(SETTINGS[name], **change)
    return replay([p.detach().clone() for p in _model().parameters()], x, y, _clients(y), s)


@pytest.mark.dist
@pytest.mark.parametrize("name", list(SETTINGS))
def test_strategy_equals_replay_on_every_agent(agents, name: str) -> None:
    want = _replay(name)
    for res in agents:
        for got, w in zip(res[name], want, strict=True):
            torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-5)
    for a, b in zip(agents[0][name], agents[1][name], strict=True):
        assert torch.equal(a, b)  # every agent holds the same global model


@pytest.mark.parametrize("name", list(SETTINGS))
def test_option_changes_the_result(name: str) -> None:
    # The settings are sensitive: the replay with the option off lands elsewhere by far more
    # than the tolerance above, so a strategy that ignored its formula would fail.
    strategy, change = OFF[name]
    on, off = _replay(name), _replay(name, strategy=strategy, **change)
    gap = max(float((a - b).abs().max()) for a, b in zip(on, off, strict=True))
    assert gap > 1e-2, gap


@pytest.mark.dist
def test_scaffold_server_variate_is_mean_of_client_variates(agents) -> None:
    for res in agents:
        torch.testing.assert_close(res["c"], res["c_mean"], rtol=1e-4, atol=1e-6)
        assert res["homes_ok"]
    assert float(agents[0]["c"].abs().max()) > 0


@pytest.mark.e2e
def test_ddla_run_scaffold_keeps_client_state_on_disk(tmp_path) -> None:
    import ddla

    summary = ddla.launch(
        overrides=[
            "agents=2", "data.dataset=digits", "sync.strategy=scaffold", "fed.clients=20",
            "fed.fraction=0.25", "fed.batch=10", "optim.lr=0.1", "train.steps=12",
            "data.partition=pathological:2", "train.eval_every=0", f"out={tmp_path}",
        ],
        progress=False,
    )  # fmt: skip
    files = sorted(p.name for p in (tmp_path / "fed").iterdir())
    assert files == ["scaffold-c-agent0.f32", "scaffold-c-agent1.f32"]
    assert sum(h["accepted"] for h in summary["federated"]["per_round"]) == 12 * 5
    print("scaffold e2e accuracy", summary["final"]["accuracy"])
    assert summary["final"]["accuracy"] > 0.3, summary["final"]  # 10 classes: chance is 0.1
