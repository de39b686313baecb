"""The supervising launcher notices restarted agents that nobody is left to admit
(ddla/launch/supervise.py ``_stranded``), on a real Store with the keys the agents and the
launcher set; the end-to-end case is tests/e2e/test_faults.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch.distributed as dist

from ddla.comm.elastic import RESTARTING_KEY, STARTED_KEY
from ddla.launch.supervise import _stranded


def _procs(**exitcodes: int | None) -> dict[int, SimpleNamespace]:
    return {int(rank[1:]): SimpleNamespace(exitcode=code) for rank, code in exitcodes.items()}


@pytest.fixture
def store() -> dist.Store:
    s = dist.HashStore()
    s.set(STARTED_KEY, b"1")
    return s


def test_every_live_agent_waiting_to_rejoin_is_stranded(store: dist.Store) -> None:
    for rank in (0, 2):
        store.set(f"{RESTARTING_KEY}/{rank}", b"1")
    # agent 1 ended (lost, out of restarts): only restarted agents are alive
    assert _stranded(_procs(r0=None, r1=1, r2=None), store) == [0, 2]


def test_a_live_member_can_still_admit_them(store: dist.Store) -> None:
    store.set(f"{RESTARTING_KEY}/2", b"1")
    assert _stranded(_procs(r0=None, r1=None, r2=None), store) == []
    store.delete_key(f"{RESTARTING_KEY}/2")  # admitted: it holds the model now
    store.set(f"{RESTARTING_KEY}/0", b"1")
    store.set(f"{RESTARTING_KEY}/1", b"1")
    assert _stranded(_procs(r0=None, r1=None, r2=None), store) == []


def test_before_training_began_nothing_is_stranded() -> None:
    store = dist.HashStore()  # no STARTED_KEY: the launcher restarts every agent instead
    store.set(f"{RESTARTING_KEY}/0", b"1")
    assert _stranded(_procs(r0=None), store) == []
    assert _stranded(_procs(r0=0, r1=0), dist.HashStore()) == []
