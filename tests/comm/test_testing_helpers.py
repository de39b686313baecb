"""Unit tests for ddla.testing helpers that need no spawned agent."""

from __future__ import annotations

import pickle
import socket

import pytest

import ddla.testing
from ddla.errors import ConfigError
from ddla.testing import FaultInjector, free_port


def test_free_port_is_bindable_on_loopback():
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_fault_injector_is_data():
    faults = FaultInjector().kill(rank=1, at_step=30).kill(rank=0, at_step=5, exit_code=9)
    assert len(faults) == 2
    assert faults.should_kill(1, 30) and faults.should_kill(0, 5)
    assert not faults.should_kill(1, 29) and not faults.should_kill(0, 30)
    assert pickle.loads(pickle.dumps(faults)) == faults
    assert FaultInjector.from_records(faults.to_records()) == faults
    faults.apply(rank=1, step=29)  # no matching fault: returns normally
    assert not FaultInjector().should_kill(0, 0)


def test_fault_injector_validates():
    with pytest.raises(ConfigError, match="rank >= 0"):
        FaultInjector().kill(rank=-1, at_step=3)
    with pytest.raises(ConfigError, match="exit_code=0"):
        FaultInjector().kill(rank=0, at_step=3, exit_code=0)
    with pytest.raises(ConfigError, match="unknown fault kind 'slow'") as info:
        FaultInjector.from_records([{"kind": "slow", "rank": 0, "at_step": 1}])
    assert info.value.help == "choose one of: kill, stop"


def test_run_agents_rejects_bad_arguments():
    with pytest.raises(ValueError, match="world_size must be >= 1"):
        ddla.testing.run_agents(print, 0)
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        ddla.testing.run_agents(print, 1, timeout_s=0)


def test_docstring_examples_run():
    import doctest

    result = doctest.testmod(ddla.testing)
    assert result.attempted > 0 and result.failed == 0
