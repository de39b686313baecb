"""DP-FedAvg: the released aggregate is (sum of clipped updates + N(0, sigma^2 S^2)) / (qM), over
real gloo agents, central and distributed; the epsilon a run reports is dp-accounting's for the
run's (q, sigma, T)."""

from __future__ import annotations

from pathlib import Path

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.rdp import RdpAccountant
from sklearn.datasets import load_digits

import ddla
from ddla.comm import Transport
from ddla.compute import FederatedRound
from ddla.data import partition
from ddla.fed import FedConfig
from ddla.fed.sampling import poisson_sample
from ddla.sync import SyncConfig, build_strategy
from ddla.testing import run_agents
from tests.fed.replay import Setting, _local

M, Q, S, SIGMA, LR, SERVER_LR = 12, 0.5, 0.3, 2.0, 0.1, 1.0


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    return (torch.tensor(d.data[:480] / 16.0, dtype=torch.float32),
            torch.tensor(d.target[:480], dtype=torch.long))  # fmt: skip


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def _fed(mode: str, noise: float) -> FedConfig:
    return FedConfig(clients=M, fraction=Q, epochs=1, batch=20, clip=S, dp=mode, dp_noise=noise,
                     server_lr=SERVER_LR)  # fmt: skip


def _one_round(transport: Transport, fed: FedConfig) -> torch.Tensor:
    x, y = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    s = build_strategy(SyncConfig(strategy="fedavg"), transport=transport, model=model,
                       optimizer=opt)  # fmt: skip
    clients = partition("iid", y.numpy(), M, 0)
    FederatedRound(strategy=s, optimizer=opt, loss=torch.nn.functional.cross_entropy, x=x, y=y,
                   clients=clients, fed=fed)(0)  # fmt: skip
    s.close()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _agent(transport: Transport) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)  # two agents on a shared 2-core machine: one thread each
    return {
        f"{mode}:{noise}": _one_round(transport, _fed(mode, noise))
        for mode in ("central", "distributed") for noise in (0.0, SIGMA)
    }  # fmt: skip


@pytest.fixture(scope="module")
def agents() -> list[dict[str, torch.Tensor]]:
    return run_agents(_agent, 2, timeout_s=300)


def _replay_noiseless() -> torch.Tensor:
    # sum over the Poisson sample of clip_S(w_k - w), divided by the expected count q*M.
    x, y = _data()
    w = [p.detach().clone() for p in _model().parameters()]
    clients = partition("iid", y.numpy(), M, 0)
    s = Setting("fedavg", epochs=1, batch=20, lr=LR)
    total = [torch.zeros_like(p) for p in w]
    sampled = poisson_sample(round_=0, clients=M, fraction=Q, seed=0)
    assert 0 < len(sampled) < M
    for c in sampled.tolist():
        wk, _ = _local(w, x, y, clients[c], s, 0, c, None)
        d = [a - b for a, b in zip(wk, w, strict=True)]
        norm = float(torch.sqrt(sum((t.double() ** 2).sum() for t in d)))
        total = [t + a * min(1.0, S / norm) for t, a in zip(total, d, strict=True)]
    return torch.cat(
        [(p + SERVER_LR * t / (Q * M)).reshape(-1) for p, t in zip(w, total, strict=True)]
    )


@pytest.mark.dist
@pytest.mark.parametrize("mode", ["central", "distributed"])
def test_dp_aggregate_is_clipped_sum_plus_calibrated_noise(agents, mode: str) -> None:
    want = _replay_noiseless()
    for res in agents:
        torch.testing.assert_close(res[f"{mode}:0.0"], want, rtol=1e-4, atol=1e-6)
    a, b = agents
    assert torch.equal(a[f"{mode}:{SIGMA}"], b[f"{mode}:{SIGMA}"])  # agents agree
    noise = a[f"{mode}:{SIGMA}"] - a[f"{mode}:0.0"]
    expected = SERVER_LR * SIGMA * S / (Q * M)  # per-coordinate std of the released noise
    got = float(noise.std())
    assert abs(got / expected - 1) < 0.1, (got, expected)  # D = 2410 coordinates
    assert abs(float(noise.mean())) < 0.1 * expected


def test_run_reports_library_epsilon(tmp_path: Path) -> None:
    rounds, q, sigma, delta = 6, 0.25, 1.1, 1e-4
    summary = ddla.launch(
        overrides=[
            "agents=2", "data.dataset=digits", "sync.strategy=fedadam", "fed.clients=20",
            f"fed.fraction={q}", "fed.batch=10", "optim.lr=0.1", "fed.server_lr=0.03",
            "fed.dp=distributed", "fed.clip=0.5", f"fed.dp_noise={sigma}",
            f"fed.dp_delta={delta}", f"train.steps={rounds}", "train.eval_every=0",
            f"out={tmp_path}",
        ],
        progress=False,
    )  # fmt: skip
    dp = summary["federated"]["dp"]
    assert (dp["noise_multiplier"], dp["clip"], dp["sampling_rate"], dp["delta"]) == (
        sigma, 0.5, q, delta)  # fmt: skip
    eps = [h["epsilon"] for h in summary["federated"]["per_round"]]
    for t, e in enumerate(eps, start=1):
        acc = RdpAccountant(list(range(2, 257)))
        acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), t)
        assert e == pytest.approx(acc.get_epsilon(delta), rel=1e-12)
    assert dp["epsilon"] == eps[-1] and all(np.diff(eps) > 0)
    # The library's default (fractional) orders land within a few percent of ours.
    acc = RdpAccountant()
    acc.compose(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), rounds
    )
    assert dp["epsilon"] == pytest.approx(acc.get_epsilon(delta), rel=0.05)
    assert np.isfinite(summary["final"]["accuracy"])


def test_resumed_accountant_reports_the_same_epsilon() -> None:
    from ddla.fed.privacy import Accountant

    whole = Accountant(q=0.1, noise=1.0, delta=1e-5)
    eps = [whole.epsilon(rounds=t) for t in range(1, 11)]
    fresh = Accountant(q=0.1, noise=1.0, delta=1e-5)  # a resumed run starts at round 7
    assert fresh.epsilon(rounds=7) == pytest.approx(eps[6], rel=1e-12)
    assert fresh.epsilon(rounds=10) == pytest.approx(eps[9], rel=1e-12)
