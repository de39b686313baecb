"""param_server over real gloo agents: S = 0 with one server equals synchronous SGD on the same
batches (an independent single-process replay); sharded servers equal one server; the
measured staleness never exceeds S with a deliberately slow worker (and does with S = inf);
dedicated servers; a compressed push; a dead worker and a dead server are named."""

from __future__ import annotations

import time

import pytest
import torch

from ddla.comm import Transport
from ddla.errors import ConfigError, PeerFailedError
from ddla.sync import SyncConfig, build_strategy
from ddla.testing import run_agents

# Spawning agents and importing torch take minutes on a loaded shared machine.
pytestmark = [pytest.mark.dist, pytest.mark.timeout(900)]

IN, HID, OUT = 6, 5, 3
LR = 0.1


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.ReLU(), torch.nn.Linear(HID, OUT))


def _batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(8, IN, generator=gen), torch.randint(0, OUT, (8,), generator=gen)


def _train(transport: Transport, sync: dict, steps: int, slow: dict | None = None) -> dict:
    torch.set_num_threads(1)
    if transport.timeout_s > 30:  # under load a peer can take minutes to reach its first step
        transport.timeout_s = 300.0
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    strategy = build_strategy(
        SyncConfig(strategy="param_server", **sync), transport=transport, model=model,
        optimizer=opt,
    )  # fmt: skip
    delay = (slow or {}).get(transport.rank, 0.0)
    for step in range(1, steps + 1):
        if strategy.is_worker:
            x, y = _batch(transport.rank, step)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            time.sleep(delay)
            opt.step()
    strategy.finish()
    strategy.close()
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "seen": list(strategy.staleness_seen),
        "summary": strategy.summary()["param_server"],
        "bytes": transport.stats.totals("train"),
    }


def _reference(workers: list[int], steps: int) -> list[torch.Tensor]:
    """Synchronous SGD, written out: the mean of the workers' gradients at the same point."""
    model = _model()
    params = list(model.parameters())
    for step in range(1, steps + 1):
        grads = []
        for rank in workers:
            x, y = _batch(rank, step)
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            grads.append([p.grad.clone() for p in params])
        with torch.no_grad():
            for i, p in enumerate(params):
                p -= LR * torch.stack([g[i] for g in grads]).mean(0)
    return [p.detach().clone() for p in params]


def _agent_sync(transport: Transport) -> dict:
    return {
        "one": _train(transport, {"servers": 1}, 6),
        "two": _train(transport, {"servers": 2}, 6),
        "int8": _train(transport, {"servers": 2, "compress": "int8"}, 4),
    }


def test_s0_one_server_is_synchronous_sgd_and_shards_agree():
    results = run_agents(_agent_sync, 3, timeout_s=900)
    expected = _reference([0, 1, 2], 6)
    for r in results:
        torch.testing.assert_close(r["one"]["params"], expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["two"]["params"], r["one"]["params"], rtol=1e-5, atol=1e-6)
        assert set(r["one"]["seen"]) == {0}
    # int8 pushes: every agent ends identical, close to fp32.
    for r in results[1:]:
        torch.testing.assert_close(r["int8"]["params"], results[0]["int8"]["params"])
    assert results[0]["one"]["summary"]["servers"][0]["version"] == 6
    # a worker's pushes and pulls moved bytes (rank 0's shard is co-located: less for it).
    assert results[1]["one"]["bytes"]["bytes_sent"] > 0


def _agent_stale(transport: Transport, bound: str) -> dict:
    return _train(transport, {"staleness": bound}, 12, slow={2: 0.5})


@pytest.mark.parametrize("bound", ["2"])
def test_staleness_never_exceeds_the_bound_with_a_slow_worker(bound):
    results = run_agents(_agent_stale, 3, bound, timeout_s=900)
    summary = results[0]["summary"]
    assert summary["max_staleness"] <= int(bound)
    assert max(max(r["seen"]) for r in results) <= int(bound)
    # the fast workers did run ahead of the slow one as far as the bound allows
    assert max(max(r["seen"]) for r in results[:2]) == int(bound)
    for r in results[1:]:
        torch.testing.assert_close(r["params"], results[0]["params"])


@pytest.mark.slow
def test_unbounded_staleness_runs_ahead():
    results = run_agents(_agent_stale, 3, "inf", timeout_s=900)
    assert max(max(r["seen"]) for r in results[:2]) > 2


def _agent_dedicated(transport: Transport) -> dict:
    return _train(transport, {"servers": 1, "server_ranks": "2"}, 5)


def test_dedicated_server_is_synchronous_sgd_of_the_workers():
    results = run_agents(_agent_dedicated, 3, timeout_s=900)
    expected = _reference([0, 1], 5)
    for r in results:
        torch.testing.assert_close(r["params"], expected, rtol=1e-5, atol=1e-6)


def _agent_dead_worker(transport: Transport) -> dict:
    transport.timeout_s = 30.0  # the server names a worker silent this long
    if transport.rank == 2:
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        build_strategy(SyncConfig(strategy="param_server"), transport=transport, model=model,
                       optimizer=opt)  # fmt: skip
        import os

        os._exit(3)  # dies before its first push
    return _train(transport, {}, 3)


def test_dead_worker_is_named():
    # run_agents re-raises the first agent's error, with its rank
    with pytest.raises(PeerFailedError, match=r"worker rank 2 (is gone|sent no)"):
        run_agents(_agent_dead_worker, 3, timeout_s=900, allow_exit=(2,))


def _agent_dead_server(transport: Transport) -> dict:
    transport.timeout_s = 30.0
    if transport.rank == 0:
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        build_strategy(SyncConfig(strategy="param_server", server_ranks="0"), transport=transport,
                       model=model, optimizer=opt)  # fmt: skip
        import os

        os._exit(3)
    return _train(transport, {"server_ranks": "0"}, 3)


def test_dead_server_is_named():
    with pytest.raises(PeerFailedError, match=r"parameter server 0 \(rank 0\) did not answer"):
        run_agents(_agent_dead_server, 3, timeout_s=900, allow_exit=(0,))


def test_refusals():
    with pytest.raises(ConfigError, match=r"sync\.staleness"):
        SyncConfig(strategy="param_server", staleness="-1")
    with pytest.raises(ConfigError, match="server_ranks names 1"):
        SyncConfig(strategy="param_server", servers=2, server_ranks="0")
