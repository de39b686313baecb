"""fault.slow over real gloo agents: a 3x slower agent's extra compute is on its clock, and on a
virtual-cpu clock its peers see the delay as waiting (clocks re-synchronized at collectives);
the per-agent link/wait split says who waited."""

from __future__ import annotations

import time

import pytest
import torch

from ddla.comm import Transport
from ddla.comm.clock import CpuClock, RealClock, VirtualClock
from ddla.compute import Replica
from ddla.compute.straggler import Slowed
from ddla.errors import ConfigError
from ddla.faults import FaultConfig
from ddla.metrics.timer import AgentTimer
from ddla.sync import SyncConfig, build_strategy
from ddla.testing import run_agents

STEPS = 30


def _agent(transport: Transport, clock: str) -> dict:
    torch.set_num_threads(1)
    transport.emulate_links("lan", clock=clock)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    strategy = build_strategy(SyncConfig(), transport=transport, model=model, optimizer=opt)
    x, y = torch.randn(256, 64), torch.randint(0, 4, (256,))
    step = Replica(strategy=strategy, optimizer=opt, loss=torch.nn.functional.cross_entropy,
                   batch=lambda i: (x, y))  # fmt: skip
    factor = FaultConfig(slow="1:3").slowdown(transport.rank)
    compute = step if factor == 1.0 else Slowed(step, factor=factor, transport=transport)
    timer = AgentTimer(transport)
    for i in range(STEPS):
        timer.begin_step()
        compute(i)
        timer.end_step()
    strategy.finish()
    strategy.close()
    return {"wait": timer.wait_s(), "waited": transport.clock.waited_s,
            "extra": getattr(compute, "extra_s", 0.0), "compute": timer.compute_s}  # fmt: skip


@pytest.mark.dist
@pytest.mark.timeout(900)
def test_virtual_cpu_peers_wait_for_the_straggler():
    fast, slow = run_agents(_agent, 2, "virtual-cpu", timeout_s=600)
    assert slow["extra"] > 0
    # the fast agent waited (on its clock) for most of the straggler's extra compute
    assert fast["waited"] >= 0.5 * slow["extra"], (fast, slow)
    assert fast["wait"] >= fast["waited"] > slow["waited"]
    assert slow["compute"] > 2 * fast["compute"]


def test_clocks_spend_and_wait():
    real = RealClock()
    t = real.now()
    # the real clock waits by sleeping (a background transfer's remainder, a peer's reading)
    waited = real.wait_until(t + 0.05)
    assert waited > 0 and time.monotonic() >= t + 0.05 and real.waited_s == waited
    assert real.wait_until(t) == 0.0 and real.modelled_s == 0.0
    # meeting a peer's reading: the real clock blocked for real on the message (and another
    # host's monotonic reading is no time here), so it does not wait again
    assert real.meet(real.now() + 100) == 0.0 and real.waited_s == waited
    v = VirtualClock()
    t = v.now()
    waited = v.wait_until(t + 5.0)
    assert waited == pytest.approx(5.0, abs=0.01) and v.now() >= t + 5.0
    assert v.wait_until(t) == 0.0 and v.waited_s == waited and v.modelled_s == 0.0
    assert v.meet(v.now() + 1.0) == pytest.approx(1.0, abs=0.01)  # a virtual clock catches up
    c = CpuClock()
    t = c.now()
    c.spend(0.01)  # sleeps 10 ms, which CPU time would not count: added to the reading
    assert c.now() - t >= 0.01


def test_fault_slow_refusals():
    for bad in ("1", "1:0.5", "x:2", "1:inf"):
        with pytest.raises(ConfigError, match=r"fault\.slow"):
            FaultConfig(slow=bad)
    from ddla.config import RunConfig

    with pytest.raises(ConfigError, match="agent 5 does not exist"):
        RunConfig.load(None, ["agents=2", "fault.slow=5:2"])


def test_rank_colon_factor_survives_yaml():
    from ddla.config import RunConfig

    # YAML 1.1 reads 3:3 as the base-60 number 183; an override keeps it a string.
    assert RunConfig.load(None, ["agents=4", "fault.slow=3:3"]).fault.slowdown(3) == 3.0
    assert RunConfig.load(None, ["agents=4", "fault.slow=1:1.5,3:2"]).fault.slowdown(1) == 1.5
    # ... and 1:1.5 as the base-60 float 61.5 (the --set parser keeps both as written)
    assert RunConfig.load(None, ["agents=4", "fault.slow=1:1.5"]).fault.slowdown(1) == 1.5
