"""Unit tests (no process group): CommStats, ring_bytes, failure mapping, single-agent Transport."""

from __future__ import annotations

import doctest
import json
import pickle
import threading

import pytest
import torch

import ddla.comm
import ddla.comm.failures
import ddla.comm.ring
import ddla.comm.stats
import ddla.comm.transport
from ddla.comm import CommStats, Transport, ring_bytes
from ddla.comm.failures import comm_failure
from ddla.errors import (
    CheckpointError,
    CommError,
    CommTimeoutError,
    ConfigError,
    PeerFailedError,
)

# ---- CommStats ------------------------------------------------------------------------------


def test_stats_totals_per_tag_op_and_json():
    stats = CommStats()
    stats.record("all_reduce", "train", 100, 100, 0.5)
    stats.record("all_reduce", "train", 100, 100, 0.25)
    stats.record("all_reduce", "train", 0, 0, 1.0, calls=0)  # async completion: seconds only
    stats.record("broadcast", "eval", 40, 0, 0.125)
    stats.record("barrier", "control", 0, 0, 0.0625)
    assert stats.totals("train") == {
        "calls": 2,
        "bytes_sent": 200,
        "bytes_received": 200,
        "seconds": 1.75,
    }
    assert stats.totals("eval")["bytes_sent"] == 40
    assert stats.totals("missing") == {
        "calls": 0,
        "bytes_sent": 0,
        "bytes_received": 0,
        "seconds": 0.0,
    }
    assert stats.totals()["calls"] == 4 and stats.totals()["bytes_sent"] == 240
    view = json.loads(json.dumps(stats.as_dict()))
    assert view["by_op"]["all_reduce"]["calls"] == 2
    assert view["by_tag"]["control"]["calls"] == 1
    assert view["by_op_tag"]["broadcast/eval"]["bytes_sent"] == 40
    assert view["total"] == stats.totals()


def test_stats_state_dict_round_trip_keeps_counting():
    stats = CommStats()
    stats.record("send", "train", 12, 0, 0.5)
    stats.record("recv", "eval", 0, 8, 0.25)
    state = pickle.loads(pickle.dumps(stats.state_dict()))  # survives a checkpoint file
    resumed = CommStats()
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert resumed.as_dict() == stats.as_dict()
    resumed.record("send", "train", 12, 0, 0.5)
    assert resumed.totals("train") == {
        "calls": 2,
        "bytes_sent": 24,
        "bytes_received": 0,
        "seconds": 1.0,
    }


def test_stats_rejects_bad_state_and_negative_counts():
    with pytest.raises(CheckpointError, match="not a CommStats state_dict") as info:
        CommStats().load_state_dict({"entries": {}})
    assert info.value.help
    with pytest.raises(ValueError, match="non-negative"):
        CommStats().record("send", "train", -1, 0, 0.0)


def test_stats_threads_lose_no_update():
    stats = CommStats()

    def hammer():
        for _ in range(2000):
            stats.record("all_reduce", "train", 3, 5, 0.0)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stats.totals()["calls"] == 8000 and stats.totals()["bytes_received"] == 40000


# ---- ring_bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
def test_ring_bytes_formulas(n):
    b = 1001  # odd, so the all_reduce integer division matters
    for rank in range(n):
        assert ring_bytes("all_reduce", b, n, rank) == (2 * (n - 1) * b // n,) * 2
        assert ring_bytes("all_gather", b, n, rank) == ((n - 1) * b,) * 2
        assert ring_bytes("all_to_all", b, n, rank) == ((n - 1) * b // n,) * 2
        root = ring_bytes("broadcast", b, n, rank, src=0)
        assert root == (((n - 1) * b, 0) if rank == 0 else (0, b if n > 1 else 0))
        assert ring_bytes("barrier", b, n, rank) == (0, 0)
        assert ring_bytes("send", b, n, rank) == ((b, 0) if n > 1 else (0, 0))
        assert ring_bytes("recv", b, n, rank) == ((0, b) if n > 1 else (0, 0))


def test_ring_bytes_all_reduce_totals_match_ring_traffic():
    # Over the whole ring, 2*(N-1) steps each move N chunks of B/N bytes.
    n, b = 4, 4096
    assert sum(ring_bytes("all_reduce", b, n, r)[0] for r in range(n)) == 2 * (n - 1) * b


def test_ring_bytes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown op 'reduce'"):
        ring_bytes("reduce", 8, 2, 0)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        ring_bytes("send", 8, 2, 2)
    with pytest.raises(ValueError, match="broadcast needs 0 <= src"):
        ring_bytes("broadcast", 8, 2, 0)


# ---- failure mapping (messages as gloo on torch 2.13 really raises them) ----------------------

GLOO_TIMEOUT = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] "
    "Timed out waiting 2000ms for recv operation to complete"
)
GLOO_PEER = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed "
    "by peer [127.0.0.1]:12681. This is typically caused by a remote worker crashing. Check the "
    "logs of the remote worker before reporting an error. GLHF!"
)


def test_failure_mapping():
    kw = {"op": "recv", "tag": "eval", "where": "rank 3", "timeout_s": 2.0}
    err = comm_failure(RuntimeError(GLOO_TIMEOUT), **kw)
    assert type(err) is CommTimeoutError
    assert str(err) == (
        "recv (tag 'eval') timed out after 2 s waiting for rank 3 "
        "(Timed out waiting 2000ms for recv operation to complete)"
    )
    err = comm_failure(RuntimeError(GLOO_PEER), **kw)
    assert type(err) is PeerFailedError
    assert str(err) == (
        "recv (tag 'eval') failed: rank 3 closed the connection, the agent probably died "
        "(Connection closed by peer [127.0.0.1]:12681)"
    )
    err = comm_failure(RuntimeError("Application timeout caused pair closure"), **kw)
    assert type(err) is CommTimeoutError and "earlier timeout" in str(err)
    err = comm_failure(RuntimeError("Operation timed out!"), **kw)
    assert type(err) is CommTimeoutError
    err = comm_failure(RuntimeError("Tensors must be CPU and dense"), **kw)
    assert type(err) is CommError and "Tensors must be CPU and dense" in str(err)
    assert "same order" in err.help


# ---- Transport without a process group ------------------------------------------------------


def test_all_to_all_needs_equal_chunks():
    with Transport.single() as transport:
        with pytest.raises(ValueError, match="1-D tensor"):
            transport.all_to_all(torch.zeros(2, 2))
        assert transport.stats.totals()["calls"] == 0  # refused before anything was recorded


def test_single_agent_transport_is_local_and_free():
    transport = Transport.single(timeout_s=5)
    assert (transport.rank, transport.world_size, transport.backend) == (0, 1, "none")
    x = torch.tensor([2.0, 4.0])
    assert transport.all_reduce(x, op="avg") is x and x.tolist() == [2.0, 4.0]
    assert [t.tolist() for t in transport.all_gather(x)] == [[2.0, 4.0]]
    assert transport.all_gather_object("meta") == ["meta"]
    assert transport.all_to_all(x).tolist() == [2.0, 4.0]
    assert transport.broadcast(x, src=0).tolist() == [2.0, 4.0]
    assert transport.all_reduce_async(x).wait().tolist() == [2.0, 4.0]
    transport.barrier()
    transport.store.set("k", b"v")
    assert transport.store.get("k") == b"v"
    totals = transport.stats.totals()
    assert totals["calls"] == 7 and totals["bytes_sent"] == totals["bytes_received"] == 0
    transport.close()
    transport.close()  # idempotent
    with pytest.raises(CommError, match="closed Transport"):
        transport.barrier()


def test_transport_argument_errors():
    transport = Transport.single()
    with pytest.raises(ValueError, match="op must be one of sum, avg, max, min"):
        transport.all_reduce(torch.ones(1), op="prod")
    with pytest.raises(ValueError, match="needs a floating tensor"):
        transport.all_reduce(torch.ones(1, dtype=torch.int64), op="avg")
    with pytest.raises(ValueError, match="dst=0 must be another rank"):
        transport.send(torch.ones(1), dst=0)
    with pytest.raises(ValueError, match="src=1 is not a rank"):
        transport.broadcast(torch.ones(1), src=1)
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        transport.barrier(timeout_s=0)
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        Transport.single(timeout_s=-1)


def test_transport_without_group_or_env_explains(monkeypatch):
    with pytest.raises(CommError, match="not initialized") as info:
        Transport()
    assert "from_env" in info.value.help
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT are not"):
        Transport.from_env()
    with pytest.raises(ConfigError, match="unknown communication backend 'mpi'"):
        Transport.from_env(backend="mpi")


@pytest.mark.parametrize(
    "module",
    [ddla.comm, ddla.comm.failures, ddla.comm.ring, ddla.comm.stats, ddla.comm.transport],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, extraglobs=vars(module))
    assert result.attempted > 0 and result.failed == 0
