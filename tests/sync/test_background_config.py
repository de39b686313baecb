"""sync.background: when it is on, and the one-line refusals of what it cannot cover."""

from __future__ import annotations

import pytest
import torch

from ddla.comm import Transport
from ddla.comm.background import BackgroundChannel
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.faults import survives
from ddla.sync import SyncConfig


@pytest.mark.parametrize(
    ("kwargs", "on"),
    [
        ({"strategy": "diloco", "every": 10}, False),
        ({"strategy": "diloco", "every": 10, "overlap": 1}, True),
        ({"strategy": "streaming_diloco", "every": 10, "overlap": 2}, True),
        ({"strategy": "streaming_diloco", "every": 10, "overlap": 2, "background": "never"}, False),
        ({"strategy": "diloco", "every": 10, "background": "always"}, True),
        ({"strategy": "local_sgd", "every": 10, "background": "always"}, True),
        ({"strategy": "allreduce"}, False),
    ],
)
def test_when_background_is_on(kwargs, on):
    assert SyncConfig(**kwargs).in_background is on


def test_background_always_is_refused_where_it_does_not_apply():
    with pytest.raises(ConfigError, match=r"sync\.background=always does not apply"):
        SyncConfig(strategy="allreduce", background="always")
    with pytest.raises(ConfigError, match=r"sync\.background value"):
        SyncConfig(strategy="diloco", background="sometimes")


def _run(*sets: str) -> RunConfig:
    return RunConfig.load(None, ["agents=2", "sync.strategy=diloco", "sync.every=10", *sets])


def test_background_refuses_security_and_survival_and_ends_a_run_instead():
    with pytest.raises(ConfigError, match=r"does not combine with security\.enabled") as info:
        _run("sync.overlap=1", "security.enabled=true")
    assert "sync.background=never" in (info.value.help or "")
    with pytest.raises(ConfigError, match=r"fault\.survive=required: background synchronization"):
        _run("sync.overlap=1", "fault.survive=required")
    assert not survives(_run("sync.overlap=1"))  # auto: a lost agent ends the run, clearly
    assert survives(_run("sync.overlap=1", "sync.background=never"))


def test_one_agent_channel_runs_jobs_at_once_on_the_same_transport():
    with Transport.single() as transport:
        channel = BackgroundChannel(transport)
        assert channel.transport is transport
        pending = channel.submit(lambda t: t.all_reduce(torch.ones(2), op="avg"), what="x")
        assert pending.done() and pending.wait().tolist() == [1.0, 1.0]
        assert transport.stats.as_dict()["by_op"]["background_wait"]["calls"] == 1
        failing = channel.submit(lambda t: 1 / 0, what="y")
        with pytest.raises(ZeroDivisionError):
            failing.result()
        channel.close()
