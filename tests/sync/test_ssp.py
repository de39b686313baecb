"""The parameter server's pure parts: blocks over servers, the stale-synchronous gate, the
staleness scaling; one agent's server state round trip (a checkpoint)."""

from __future__ import annotations

import math

import torch

from ddla.comm import Transport
from ddla.sync import SyncConfig, build_strategy
from ddla.sync.ssp import SspGate, assign_blocks, build_server_optimizer, staleness_scale


def test_blocks_are_whole_tensors_balanced_by_size():
    shards = assign_blocks([100, 5, 60, 50, 3], servers=2)
    assert sorted(i for s in shards for i in s) == [0, 1, 2, 3, 4]
    loads = [sum([100, 5, 60, 50, 3][i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= 12  # {100, 5, 3} vs {60, 50}
    assert assign_blocks([7], servers=3) == [[0], [], []]


def test_gate_holds_a_fast_worker_within_the_bound():
    gate = SspGate(workers=[0, 1], staleness=1)
    gate.push(0)
    assert gate.may_go(0) and gate.staleness(0) == 1
    gate.push(0)
    assert not gate.may_go(0) and gate.staleness(0) == 2
    gate.push(1)
    assert gate.may_go(0)
    gate.finish(1)  # a finished worker no longer holds the others back
    gate.push(0)
    gate.push(0)
    assert gate.may_go(0) and gate.staleness(0) == 0
    sync = SspGate(workers=[0, 1], staleness=0)
    sync.push(0)
    assert not sync.may_go(0)
    sync.push(1)
    assert sync.may_go(0) and sync.may_go(1)
    free = SspGate(workers=[0, 1], staleness=math.inf)
    for _ in range(50):
        free.push(0)
    assert free.may_go(0) and free.staleness(0) == 50


def test_staleness_scale_and_server_optimizers():
    assert staleness_scale(3, enabled=True) == 0.25 and staleness_scale(3, enabled=False) == 1
    p = torch.nn.Parameter(torch.zeros(2))
    for name, kind in (("sgd", torch.optim.SGD), ("momentum", torch.optim.SGD),
                       ("adam", torch.optim.Adam)):  # fmt: skip
        assert isinstance(build_server_optimizer([p], name, lr=0.1), kind)


def _strategy(transport: Transport, model: torch.nn.Module, opt) -> object:
    cfg = SyncConfig(strategy="param_server", server_optim="adam", server_lr=0.01)
    return build_strategy(cfg, transport=transport, model=model, optimizer=opt)


def test_one_agent_server_state_round_trips():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Transport.single() as t:
        s = _strategy(t, model, opt)
        for _ in range(4):
            model(torch.randn(5, 3)).sum().backward()
            opt.step()
            opt.zero_grad()
        state = s.state_dict()
        s.close()
        again = _strategy(t, torch.nn.Linear(3, 2), torch.optim.SGD(model.parameters(), lr=0.1))
        again.load_state_dict(state)
        assert again.server.version == s.server.version == 4
        assert again.server.gate.clocks == {0: 4} and again.clock == 4
        for a, b in zip(again.server.snapshot(), s.server.snapshot(), strict=True):
            torch.testing.assert_close(a, b)
        assert again.server.state_dict()["optimizer"]["state"][0]["step"] == 4
        again.close()


def test_run_refusals_in_one_line():
    import pytest

    from ddla.config import RunConfig
    from ddla.errors import ConfigError

    base = ["agents=2", "sync.strategy=param_server"]
    with pytest.raises(ConfigError, match="rank 2 is not an agent"):
        RunConfig.load(None, [*base, "sync.server_ranks=2"])
    with pytest.raises(ConfigError, match="none trains"):
        RunConfig.load(None, [*base, "sync.servers=2", "sync.server_ranks=0,1"])
    with pytest.raises(ConfigError, match="not a list of distinct ranks"):
        RunConfig.load(None, [*base, "sync.server_ranks=0,0"])
    with pytest.raises(ConfigError, match=r"model\.stages"):
        RunConfig.load(None, ["agents=4", "sync.strategy=gossip", "model.stages=2"])
    assert RunConfig.load(None, [*base, "sync.staleness=inf"]).sync.staleness_bound == math.inf
