"""Fixtures for security tests: real TCPStores on loopback and handshakes run in threads."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from torch.distributed import TCPStore

from ddla.security.identity import Session, handshake


def run_handshakes(
    secrets: list[bytes | None], *, timeout_s: float = 5.0, on_failure: str = "abort", skip=()
) -> dict[int, Session | BaseException]:
    """Every rank's handshake in its own thread over one real TCPStore; rank -> Session or error.

    Ranks in ``skip`` never start (an agent that does not show up).
    """
    world = len(secrets)
    master = TCPStore(
        "127.0.0.1", 0, world, True, timeout=timedelta(seconds=10), wait_for_workers=False
    )
    stores = [master] + [
        TCPStore("127.0.0.1", master.port, world, False, timeout=timedelta(seconds=10))
        for _ in range(world - 1)
    ]
    out: dict[int, Session | BaseException] = {}

    def join(rank: int) -> None:
        try:
            out[rank] = handshake(
                stores[rank],
                rank=rank,
                world_size=world,
                secret=secrets[rank],
                timeout_s=timeout_s,
                on_failure=on_failure,
            )
        except BaseException as exc:  # collected and asserted by the test
            out[rank] = exc

    threads = [threading.Thread(target=join, args=(r,)) for r in range(world) if r not in skip]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s + 10)
    assert not any(t.is_alive() for t in threads), "a handshake hung"
    return out


@pytest.fixture
def sessions():
    """Authenticated sessions for N agents sharing one secret."""

    def make(world: int) -> list[Session]:
        out = run_handshakes([b"s" * 32] * world)
        return [out[r] for r in range(world)]

    return make
