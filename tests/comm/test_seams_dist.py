"""Transport seams with real gloo agents: subgroups, non-blocking and any-source point-to-point.

One spawn of four agents runs every scenario (spawning is the slow part on a busy machine);
values are checked against a single-process reference, bytes against the ring model, the
virtual clock against the link model on the groups' links, to the last bit.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
import torch

from ddla.comm import Transport, op_seconds
from ddla.comm.links import LinkTable
from ddla.comm.ring import ring_bytes
from ddla.errors import CommError, CommTimeoutError
from ddla.testing import run_agents

pytestmark = pytest.mark.dist

N = 4
LINKS = ("100mbit:10ms", "3=20mbit:30ms")
PAIRS = [[0, 2], [1, 3]]
TRIO = [0, 1, 2]
F32 = 4


def _scenarios(transport: Transport) -> dict[str, Any]:
    rank, out = transport.rank, {}
    transport.emulate_links(*LINKS, clock="virtual")
    pair = transport.split(PAIRS)
    out["pair"] = (pair.rank, pair.world_size, pair.global_ranks, pair.stats is transport.stats)
    out["pair_sum"] = pair.all_reduce(torch.full((5,), rank + 1.0)).tolist()
    trio = transport.subgroup(TRIO)
    out["trio_is_none"] = trio is None
    if trio is not None:
        out["trio_avg"] = trio.all_reduce(torch.full((3,), float(rank)), op="avg").tolist()
    try:  # groups are created by every agent of the run, so not from a group
        pair.subgroup([0])
    except CommError as exc:
        out["nested"] = str(exc)

    # non-blocking ring: post the receive, send, then wait both
    right, left = (rank + 1) % N, (rank - 1) % N
    inbox = torch.zeros(7)
    got = transport.irecv(inbox, src=left)
    sent = transport.isend(torch.full((7,), float(rank)), right)
    out["handles"] = (sent.peer, got.peer, sent.source, got.source)
    sent.wait()
    out["ring"] = got.wait().tolist()
    out["wait_twice"] = got.wait() is inbox  # a second wait returns at once, accounts nothing

    # a server on rank 0 takes one message from each worker, in whatever order they come
    if rank == 0:
        arrivals = []
        for _ in range(N - 1):
            handle = transport.irecv(torch.empty(4), channel=1)
            value = handle.wait(timeout_s=30)
            arrivals.append((handle.source, value.tolist()))
        out["arrivals"] = sorted(arrivals)
    else:
        transport.isend(torch.full((4,), float(rank)), 0, channel=1).wait()
    transport.barrier()
    out["stats"] = transport.stats.as_dict()
    out["modelled"] = transport.clock.modelled_s

    # a receive from a partner that never sends: the error names the run's rank of the peer
    if rank == 1:
        start = time.monotonic()
        try:
            pair.irecv(torch.empty(2), src=1).wait(timeout_s=1.5)
        except CommTimeoutError as exc:
            out["timeout"] = (str(exc), time.monotonic() - start)
        transport.store.set("timed_out", b"1")
    else:  # stay alive, so that the connection is not 'closed by peer' before the timeout
        transport.store.wait(["timed_out"], timedelta(seconds=60))
    return out


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    return run_agents(_scenarios, N, timeout_s=180)


def test_split_and_subgroup_values_ranks_and_shared_stats(results):
    for rank, out in enumerate(results):
        group = PAIRS[rank % 2]
        assert out["pair"] == (group.index(rank), 2, tuple(group), True)
        assert out["pair_sum"] == [float(sum(r + 1 for r in group))] * 5
        assert out["trio_is_none"] == (rank not in TRIO)
        if rank in TRIO:
            assert out["trio_avg"] == pytest.approx([sum(TRIO) / 3] * 3)
        assert "subgroup() called on a subgroup" in out["nested"]


def test_nonblocking_and_any_source_values(results):
    for rank, out in enumerate(results):
        left, right = (rank - 1) % N, (rank + 1) % N
        assert out["handles"] == (right, left, rank, left)
        assert out["ring"] == [float(left)] * 7
        assert out["wait_twice"] is True
    assert results[0]["arrivals"] == [(r, [float(r)] * 4) for r in range(1, N)]


def _want_bytes(rank: int) -> dict[str, tuple[int, int, int]]:
    """(calls, sent, received) per op/tag from the ring model, by hand."""
    pair_ar = ring_bytes("all_reduce", 5 * F32, 2, PAIRS[rank % 2].index(rank))
    trio_ar = ring_bytes("all_reduce", 3 * F32, 3, rank) if rank in TRIO else (0, 0)
    ar_calls = 1 + (rank in TRIO)
    ring = 7 * F32
    sends, recvs = 1, 1
    send_bytes, recv_bytes = ring, ring
    if rank == 0:
        recvs, recv_bytes = 1 + (N - 1), ring + (N - 1) * 4 * F32
    else:
        sends, send_bytes = 2, ring + 4 * F32
    return {
        "all_reduce/train": (ar_calls, pair_ar[0] + trio_ar[0], pair_ar[1] + trio_ar[1]),
        "send/train": (sends, send_bytes, 0),
        "recv/train": (recvs, 0, recv_bytes),
        "new_group/control": (3, 0, 0),  # two pairs (split) + the trio, on every agent
        "barrier/control": (1, 0, 0),
    }


def test_exact_bytes_through_the_seam(results):
    for rank, out in enumerate(results):
        ops = out["stats"]["by_op_tag"]
        got = {k: (v["calls"], v["bytes_sent"], v["bytes_received"]) for k, v in ops.items()}
        assert got == _want_bytes(rank), rank


def test_virtual_clock_charges_the_groups_links_exactly(results):
    world = LinkTable.build(*LINKS, world_size=N)
    for rank, out in enumerate(results):
        group = PAIRS[rank % 2]
        want = op_seconds(
            "all_reduce", 5 * F32, table=world.restricted(group), rank=group.index(rank)
        )
        if rank in TRIO:
            want += op_seconds("all_reduce", 3 * F32, table=world.restricted(TRIO), rank=rank)
        left, right = (rank - 1) % N, (rank + 1) % N
        want += op_seconds("send", 7 * F32, table=world, rank=rank, dst=right)
        want += op_seconds("recv", 7 * F32, table=world, rank=rank, src=left)
        if rank == 0:
            want += sum(
                op_seconds("recv", 4 * F32, table=world, rank=0, src=s) for s in range(1, N)
            )
        else:
            want += op_seconds("send", 4 * F32, table=world, rank=rank, dst=0)
        assert out["modelled"] == pytest.approx(want, rel=1e-12), rank
        assert out["stats"]["by_tag"]["train"]["seconds"] >= want


def test_subgroup_timeout_names_the_runs_rank_and_waits_its_limit(results):
    message, seconds = results[1]["timeout"]
    assert message.startswith("recv (tag 'train') timed out after 1.5 s waiting for rank 1 of")
    assert "(global rank 3)" in message and "global ranks 1, 3" in message
    assert seconds >= 1.5


def test_one_agent_groups_and_any_source_refused():
    transport = Transport.single()
    assert transport.split([[0]]).global_ranks == (0,)
    with pytest.raises(ValueError, match="any-source receive needs another agent"):
        transport.irecv(torch.empty(1))
    with pytest.raises(ValueError, match="exactly one group"):
        transport.split([[0], [0]])
    with pytest.raises(ValueError, match="distinct ranks"):
        transport.subgroup([1])
