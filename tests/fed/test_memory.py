"""Memory stays bounded as the client count M grows: clients are index arrays, per-client state
(SCAFFOLD's c_i) is on disk. Measured as growth of resident anonymous memory of a real agent process
on Fashion-MNIST with the paper's 2NN (784-200-200-10, D = 199,210)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ddla.comm import Transport
from ddla.compute import FederatedRound
from ddla.data import load_dataset, partition
from ddla.fed import FedConfig
from ddla.sync import SyncConfig, build_strategy
from ddla.testing import run_agents

FMNIST = "/usr/share/datasets/fashion-mnist"
MB = 2**20
#: RSS growth allowed over a run, whatever M is (the model, its grads and two D-vectors are
#: ~3 MB; the rest is allocator slack).
BOUND_MB = 48

pytestmark = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="Fashion-MNIST not installed")


def _anon_rss() -> int:
    """Resident anonymous memory (the heap), in bytes. Not RSS: the dataset is a memory-mapped
    cache file (ddla/data/cache.py) whose pages join RSS as clients touch them, which is the
    page cache's memory, not the agent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def _grow(transport: Transport, clients: int, strategy: str, rounds: int) -> dict[str, float]:
    torch.set_num_threads(1)
    ds = load_dataset("fashion-mnist", seed=0)
    x, y = ds.x_train.reshape(len(ds.x_train), -1), ds.y_train
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 200), torch.nn.ReLU(), torch.nn.Linear(200, 200), torch.nn.ReLU(),
        torch.nn.Linear(200, 10),
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    s = build_strategy(SyncConfig(strategy=strategy), transport=transport, model=model,
                       optimizer=opt)  # fmt: skip
    before = _anon_rss()
    fed = FedConfig(clients=clients, fraction=0.01, batch=10)
    rnd = FederatedRound(strategy=s, optimizer=opt, loss=torch.nn.functional.cross_entropy, x=x,
                         y=y, clients=partition("iid", y.numpy(), clients, 0), fed=fed)  # fmt: skip
    peak = 0
    for r in range(rounds):
        rnd(r)
        peak = max(peak, _anon_rss())
    # What SCAFFOLD wrote to disk: one D-vector c_i per trained client (fedavg keeps none).
    trained = sum(h["trained_here"] for h in rnd.history)
    written = trained * s.dim * 4 if strategy == "scaffold" else 0
    s.close()
    return {"growth_mb": (peak - before) / MB, "state_written_mb": written / MB,
            "per_round": rnd.history[-1]["clients"]}  # fmt: skip


@pytest.mark.dist
def test_scaffold_at_10000_clients_keeps_client_state_off_the_heap() -> None:
    [res] = run_agents(_grow, 1, 10_000, "scaffold", 3, timeout_s=600)
    print("scaffold M=10000:", res)
    assert res["per_round"] == 100
    assert res["state_written_mb"] > 4 * BOUND_MB  # 300 c_i of 0.8 MB went to disk
    assert res["growth_mb"] < BOUND_MB, res


@pytest.mark.dist
@pytest.mark.slow
def test_fedavg_rss_does_not_grow_with_client_count() -> None:
    [small] = run_agents(_grow, 1, 1_000, "fedavg", 3, timeout_s=600)
    [large] = run_agents(_grow, 1, 10_000, "fedavg", 3, timeout_s=600)
    print("RSS growth MB: M=1000", small["growth_mb"], "M=10000", large["growth_mb"])
    assert large["growth_mb"] < BOUND_MB, large
    assert large["growth_mb"] - small["growth_mb"] < BOUND_MB / 4, (small, large)
