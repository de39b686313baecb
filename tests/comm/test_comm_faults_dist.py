"""Real gloo agents: timeouts, dead peers and run_agents' own failure handling."""

from __future__ import annotations

import multiprocessing
import os
import time
from datetime import timedelta

import pytest
import torch

from ddla.errors import AgentFailedError, CommTimeoutError, ConfigError, PeerFailedError
from ddla.testing import AgentExit, FaultInjector, run_agents

pytestmark = pytest.mark.dist


def _live_children() -> list[int]:
    """Live spawned agents (spawn_main) whose parent is this process, read from /proc.

    multiprocessing's own resource tracker is a long-lived child too; it is not an agent.
    """
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                is_agent = b"spawn_main" in cmdline.read()
        except OSError:
            continue
        if is_agent and int(fields[1]) == os.getpid() and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def _assert_no_children():
    assert multiprocessing.active_children() == []
    assert _live_children() == []


def _timeouts(transport):
    """Rank 0 waits for a message rank 1 never sends; rank 2 all-reduces alone."""
    rank = transport.rank
    if rank == 1:  # stays alive (so nothing is 'closed by peer') until both have timed out
        transport.store.wait(["done0", "done2"], timedelta(seconds=60))
        return None
    start = time.monotonic()
    try:
        if rank == 0:
            transport.recv(torch.zeros(3), src=1, timeout_s=2)
        else:
            transport.all_reduce(torch.ones(3), tag="train", timeout_s=2)
    except CommTimeoutError as exc:
        outcome = (type(exc).__name__, str(exc), exc.help, time.monotonic() - start)
    else:
        outcome = ("no error", "", "", time.monotonic() - start)
    transport.store.set(f"done{rank}", b"1")
    return outcome


def test_recv_and_collective_time_out_naming_peer_or_group():
    recv, _, collective = run_agents(_timeouts, 3, timeout_s=90)
    name, message, help_hint, seconds = recv
    assert name == "CommTimeoutError"
    assert "recv (tag 'train') timed out after 2 s waiting for rank 1" in message
    assert help_hint and "timeout" in help_hint
    assert 1.5 < seconds < 10  # slack: 2 shared cores
    name, message, _, seconds = collective
    assert name == "CommTimeoutError"
    assert message.startswith("all_reduce (tag 'train') timed out after 2 s")
    assert "group of 3 agents" in message
    assert 1.5 < seconds < 10  # slack: 2 shared cores
    _assert_no_children()


def _dies_before_collective(transport, faults, op):
    faults.apply(transport.rank, step=0)  # rank 1 hard-exits here, like a crash
    start = time.monotonic()
    try:
        getattr(transport, op)(torch.ones(4), timeout_s=20)
    except (PeerFailedError, CommTimeoutError) as exc:
        return type(exc).__name__, str(exc), exc.help, time.monotonic() - start
    return "no error", "", "", 0.0


@pytest.mark.parametrize("op", ["all_reduce", "all_to_all"])
def test_dead_peer_raises_peer_failed_quickly(op):
    faults = FaultInjector().kill(rank=1, at_step=0)
    survivor, dead = run_agents(
        _dies_before_collective, 2, faults, op, timeout_s=90, allow_exit=[1]
    )
    assert dead == AgentExit(rank=1, exitcode=43)
    name, message, help_hint, seconds = survivor
    # gloo reports "Connection closed by peer" at once; it does not wait for the timeout.
    assert name == "PeerFailedError", message
    assert f"{op} (tag 'train') failed: the group of 2 agents" in message
    assert "closed the connection" in message and "log" in help_hint
    assert seconds < 15  # far below the 20 s timeout: no waiting for it
    _assert_no_children()


def _rank1_raises(transport):
    if transport.rank == 1:
        raise ConfigError("bad value for lr", help="use a positive lr")
    transport.barrier(timeout_s=60)  # blocks until run_agents terminates this rank


def test_run_agents_reraises_rank_error_and_kills_the_rest():
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        run_agents(_rank1_raises, 2, timeout_s=90)
    assert str(info.value) == "rank 1: bad value for lr"
    assert info.value.help == "use a positive lr"
    assert "traceback in rank 1" in str(info.value.__cause__)
    assert "_rank1_raises" in str(info.value.__cause__)
    assert time.monotonic() - start < 60  # rank 0 did not sit out its 60 s barrier
    _assert_no_children()


def _rank0_exits_rank1_hangs(transport):
    if transport.rank == 0:
        os._exit(3)
    time.sleep(120)


def test_run_agents_unexpected_exit_is_a_failure():
    with pytest.raises(AgentFailedError, match="rank 0 exited with code 3"):
        run_agents(_rank0_exits_rank1_hangs, 2, timeout_s=90)
    _assert_no_children()


def _sleeps(transport):
    time.sleep(120)


def test_run_agents_timeout_kills_every_agent():
    start = time.monotonic()
    with pytest.raises(AgentFailedError, match=r"timed out after 4 s; ranks \[0\] did not"):
        run_agents(_sleeps, 1, timeout_s=4)
    assert time.monotonic() - start < 20
    _assert_no_children()
