"""Real gloo agents: every Transport op gives the right values and exactly the ring-model bytes."""

from __future__ import annotations

import pickle

import pytest
import torch

from ddla.testing import run_agents

pytestmark = pytest.mark.dist

F32 = 4  # bytes per float32 element
I64 = 8


def _exercise(transport):
    """Run every op once; return values and the stats (one spawn checks all ops)."""
    rank, n = transport.rank, transport.world_size
    out = {}
    x = torch.full((5,), float(rank + 1))
    out["sum"] = transport.all_reduce(x.clone()).tolist()
    out["avg"] = transport.all_reduce(x.clone(), op="avg").tolist()
    out["max"] = transport.all_reduce(x.clone(), op="max").tolist()
    out["min"] = transport.all_reduce(x.clone(), op="min", tag="eval").tolist()
    out["async"] = transport.all_reduce_async(torch.ones(3)).wait().tolist()
    gathered = transport.all_gather(torch.tensor([rank, 2 * rank], dtype=torch.int64))
    out["gather"] = [t.tolist() for t in gathered]
    out["objects"] = transport.all_gather_object({"rank": rank, "pad": "x" * rank})
    # chunk j (two int64) goes to rank j: value 10 * sender + receiver
    chunks = torch.tensor([10 * rank + j for j in range(n) for _ in range(2)], dtype=torch.int64)
    out["a2a"] = transport.all_to_all(chunks).tolist()
    out["bcast"] = transport.broadcast(torch.full((2,), float(rank)), src=n - 1).tolist()
    if n > 1:
        right, left = (rank + 1) % n, (rank - 1) % n
        message, inbox = torch.full((7,), float(rank)), torch.zeros(7)
        if rank % 2 == 0:
            transport.send(message, dst=right)
            transport.recv(inbox, src=left)
        else:
            transport.recv(inbox, src=left)
            transport.send(message, dst=right)
        out["p2p"] = inbox.tolist()
    transport.barrier()
    out["stats"] = transport.stats.as_dict()
    return out


def _payload(rank: int) -> int:
    obj = {"rank": rank, "pad": "x" * rank}
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


@pytest.mark.parametrize("n", [2, 4])
def test_ops_values_and_exact_bytes(n):
    results = run_agents(_exercise, n, timeout_s=90)
    total = n * (n + 1) / 2
    for rank, out in enumerate(results):
        assert out["sum"] == [total] * 5
        assert out["avg"] == pytest.approx([total / n] * 5)
        assert out["max"] == [float(n)] * 5
        assert out["min"] == [1.0] * 5
        assert out["async"] == [float(n)] * 3
        assert out["gather"] == [[r, 2 * r] for r in range(n)]
        assert out["objects"] == [{"rank": r, "pad": "x" * r} for r in range(n)]
        assert out["a2a"] == [10 * src + rank for src in range(n) for _ in range(2)]
        assert out["bcast"] == [float(n - 1)] * 2
        assert out["p2p"] == [float((rank - 1) % n)] * 7

        ops = out["stats"]["by_op_tag"]
        ar = 2 * (n - 1) * (5 * F32) // n  # ring reduce-scatter + all-gather
        ar_async = 2 * (n - 1) * (3 * F32) // n
        assert ops["all_reduce/train"].keys() == {
            "calls",
            "bytes_sent",
            "bytes_received",
            "seconds",
        }
        assert {k: v for k, v in ops["all_reduce/train"].items() if k != "seconds"} == {
            "calls": 4,  # sum, avg, max + the async one
            "bytes_sent": 3 * ar + ar_async,
            "bytes_received": 3 * ar + ar_async,
        }
        assert ops["all_reduce/train"]["seconds"] > 0
        assert (ops["all_reduce/eval"]["calls"], ops["all_reduce/eval"]["bytes_sent"]) == (1, ar)
        assert ops["all_gather/train"]["bytes_sent"] == (n - 1) * 2 * I64
        assert ops["all_gather/train"]["bytes_received"] == (n - 1) * 2 * I64
        assert ops["all_gather_object/eval"]["bytes_sent"] == (n - 1) * _payload(rank)
        assert ops["all_gather_object/eval"]["bytes_received"] == sum(
            _payload(r) for r in range(n) if r != rank
        )
        a2a = (n - 1) * (n * 2 * I64) // n  # keeps its own chunk, sends the other n - 1
        assert ops["all_to_all/train"]["bytes_sent"] == a2a
        assert ops["all_to_all/train"]["bytes_received"] == a2a
        root = rank == n - 1
        assert ops["broadcast/train"]["bytes_sent"] == ((n - 1) * 2 * F32 if root else 0)
        assert ops["broadcast/train"]["bytes_received"] == (0 if root else 2 * F32)
        assert (ops["send/train"]["bytes_sent"], ops["send/train"]["bytes_received"]) == (28, 0)
        assert (ops["recv/train"]["bytes_sent"], ops["recv/train"]["bytes_received"]) == (0, 28)
        assert ops["barrier/control"]["calls"] == 1
        assert ops["barrier/control"]["bytes_sent"] == 0
        by_tag = out["stats"]["by_tag"]
        assert by_tag["eval"]["bytes_sent"] == ar + (n - 1) * _payload(rank)
        assert out["stats"]["total"]["calls"] == 12


def test_world_size_one_from_env_real_gloo_group(monkeypatch):
    """World size 1 through the real env:// path, in this process: no spawn, zero bytes."""
    from ddla.comm import Transport
    from ddla.testing import free_port

    env = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    for key, value in {**env, "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    with Transport.from_env(backend="gloo", timeout_s=10) as transport:
        assert (transport.rank, transport.world_size, transport.backend) == (0, 1, "gloo")
        out = _exercise(transport)
        transport.store.set("hello", b"agent")
        assert transport.store.get("hello") == b"agent"
    assert out["sum"] == [1.0] * 5 and out["avg"] == [1.0] * 5 and out["async"] == [1.0] * 3
    assert out["gather"] == [[0, 0]] and out["objects"] == [{"rank": 0, "pad": ""}]
    assert out["bcast"] == [0.0, 0.0]
    assert out["stats"]["total"]["bytes_sent"] == 0
    assert out["stats"]["total"]["bytes_received"] == 0
    assert out["stats"]["total"]["calls"] == 10  # no send/recv with one agent
    import torch.distributed as dist

    assert not dist.is_initialized()  # close() destroyed the group it created
