"""A new membership with real gloo agents: one is killed, the survivors regroup and carry on.

Three agents all-reduce once; agent 1 hard-exits (``os._exit``, like a crash); the survivors
see PeerFailedError on point-to-point and on a collective, a regroup that names the dead agent
times out on its limit, and one that finds the survivors by itself all-reduces correctly among
them, with the bytes and the rank map of the new group.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from ddla.comm import Transport
from ddla.comm.ring import ring_bytes
from ddla.errors import CommError
from ddla.testing import AgentExit, FaultInjector, run_agents

pytestmark = pytest.mark.dist

N = 3
DEAD = 1
F32 = 4


def _outcome(fn) -> tuple[str, str, float]:
    start = time.monotonic()
    try:
        fn()
    except CommError as exc:
        return type(exc).__name__, str(exc), time.monotonic() - start
    return "no error", "", time.monotonic() - start


def _survive(transport: Transport, faults: FaultInjector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["before"] = transport.all_reduce(torch.full((4,), transport.rank + 1.0)).tolist()
    faults.apply(transport.rank, step=1)  # agent 1 dies here
    if transport.rank == 0:
        out["p2p"] = _outcome(lambda: transport.irecv(torch.empty(2), src=DEAD).wait(20))
    out["collective"] = _outcome(lambda: transport.all_reduce(torch.ones(4), timeout_s=20))
    # told the wrong membership (the dead agent included): a timeout naming it, on its limit
    out["named"] = _outcome(lambda: transport.regroup([0, 1, 2], timeout_s=2))
    new = transport.regroup(timeout_s=3)  # whoever is alive, agreed through the Store
    out["new"] = (new.rank, new.world_size, new.global_ranks, new.departed)
    out["after"] = new.all_reduce(torch.full((4,), transport.rank + 1.0)).tolist()
    out["old_refuses"] = _outcome(lambda: transport.barrier())
    out["stats"] = new.stats.as_dict()["by_op_tag"]
    return out


@pytest.fixture(scope="module")
def results() -> list[Any]:
    faults = FaultInjector().kill(rank=DEAD, at_step=1)
    return run_agents(_survive, N, faults, timeout_s=180, allow_exit=[DEAD])


def test_dead_peer_is_peer_failed_on_p2p_and_collectives(results):
    assert results[DEAD] == AgentExit(rank=DEAD, exitcode=43)
    name, message, _ = results[0]["p2p"]
    assert name == "PeerFailedError", message
    assert message.startswith("recv (tag 'train') failed: rank 1 closed the connection")
    for rank in (0, 2):
        name, message, _ = results[rank]["collective"]
        assert name == "PeerFailedError", message
        assert "the group of 3 agents" in message


def test_regroup_naming_a_dead_agent_times_out_on_its_limit(results):
    for rank in (0, 2):
        name, message, seconds = results[rank]["named"]
        assert name == "CommTimeoutError", message
        assert message == "regroup: rank(s) 1 (global rank 1) did not check in within 2 s"
        assert seconds >= 2


def test_survivors_regroup_and_all_reduce_like_a_reference(results):
    reference = float(sum(r + 1 for r in range(N) if r != DEAD))  # one process, by hand
    for rank in (0, 2):
        out = results[rank]
        assert out["before"] == [float(sum(range(1, N + 1)))] * 4
        assert out["new"] == ((0, 2).index(rank), 2, (0, 2), (DEAD,))
        assert out["after"] == [reference] * 4
        name, message, _ = out["old_refuses"]
        assert name == "CommError" and "replaced by regroup()" in message
        assert "global ranks [0, 2]" in message


def test_regroup_bytes_exact_and_failed_calls_unrecorded(results):
    for rank in (0, 2):
        ops = results[rank]["stats"]
        first = ring_bytes("all_reduce", 4 * F32, N, rank)
        second = ring_bytes("all_reduce", 4 * F32, 2, (0, 2).index(rank))
        assert (ops["all_reduce/train"]["calls"], ops["all_reduce/train"]["bytes_sent"]) == (
            2,
            first[0] + second[0],
        )
        assert ops["all_reduce/train"]["bytes_received"] == first[1] + second[1]
        assert "recv/train" not in ops  # the failed receive moved nothing we can count
        assert ops["regroup/control"]["calls"] == 1  # the one that timed out is not counted


def test_regroup_refusals_without_processes():
    transport = Transport.single()
    with pytest.raises(ValueError, match="distinct ranks"):
        transport.regroup([0, 0])
    with pytest.raises(ValueError, match="distinct ranks"):
        transport.continue_without([5])
    sub = transport.subgroup([0])
    with pytest.raises(CommError, match="regroup\\(\\) called on a subgroup"):
        sub.regroup()
    new = transport.continue_without([])
    assert (new.world_size, new.departed) == (1, ())
    with pytest.raises(CommError, match="replaced by regroup"):
        transport.all_reduce(torch.ones(1))
