"""Heartbeats over a real TCPStore name the peer that stopped answering (issue 10, item 11)."""

from __future__ import annotations

from datetime import timedelta

from torch.distributed import TCPStore

from ddla.comm.failures import name_silent_peers
from ddla.comm.heartbeat import Heartbeat
from ddla.errors import CommTimeoutError, PeerFailedError


def _stores(world: int) -> list[TCPStore]:
    master = TCPStore(
        "127.0.0.1", 0, world, True, timeout=timedelta(seconds=10), wait_for_workers=False
    )
    return [master] + [
        TCPStore("127.0.0.1", master.port, world, False, timeout=timedelta(seconds=10))
        for _ in range(world - 1)
    ]


def test_a_peer_whose_heartbeat_stops_is_named_and_live_ones_are_not() -> None:
    stores = _stores(3)
    beats = [
        Heartbeat(s, rank=r, world_size=3, interval_s=0.1).start() for r, s in enumerate(stores)
    ]
    try:
        assert beats[0].silent_peers() == []
        beats[2].stop()  # agent 2 freezes
        assert beats[0].silent_peers() == [2]
        assert beats[1].silent_peers() == [2]
    finally:
        for b in beats:
            b.stop()


def test_a_raw_gloo_timeout_becomes_an_error_naming_the_silent_agent() -> None:
    raw = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
        "20000ms for recv operation to complete"
    )
    err = name_silent_peers(
        raw, [2], op="all_reduce (DDP gradients)", tag="train", where="the group", timeout_s=20
    )
    assert isinstance(err, CommTimeoutError)
    text = str(err)
    assert text.startswith("agent 2 stopped answering")
    assert "all_reduce (DDP gradients) (tag 'train') timed out after 20 s" in text
    assert "agent 2" in err.help


def test_without_a_silent_peer_the_mapped_error_is_kept() -> None:
    dead = RuntimeError("Connection closed by peer [127.0.0.1]:1234")
    err = name_silent_peers(dead, [], op="recv", tag="train", where="rank 1", timeout_s=5)
    assert isinstance(err, PeerFailedError) and "rank 1 closed the connection" in str(err)


def test_a_join_names_the_agents_that_never_arrived() -> None:
    from ddla.comm.join import _not_arrived

    store = _stores(1)[0]
    store.set("ddla-joined/0", "1")
    store.set("ddla-joined/2", "1")
    assert _not_arrived(store, 3) == [1]
    assert _not_arrived(None, 3) == []
