import time

import pytest

from ddla.errors import AuthenticationError, CommTimeoutError
from tests.security.conftest import run_handshakes

GOOD = b"g" * 32
WRONG = b"w" * 32


def test_all_agents_with_the_secret_agree_pair_keys():
    out = run_handshakes([GOOD] * 3)
    sessions = [out[r] for r in range(3)]
    assert all(s.members == (0, 1, 2) and not s.excluded for s in sessions)
    assert sessions[0].pair_key(1, "x") == sessions[1].pair_key(0, "x")
    assert sessions[0].pair_key(1, "x") != sessions[0].pair_key(2, "x")
    assert sessions[0].pair_key(1, "x") != sessions[0].pair_key(1, "y")
    assert len({s.transcript for s in sessions}) == 1


def test_fresh_keys_every_run():
    a = run_handshakes([GOOD] * 2)
    b = run_handshakes([GOOD] * 2)
    assert a[0].pair_key(1, "x") != b[0].pair_key(1, "x")


def test_wrong_secret_is_named_by_every_honest_agent_and_fails_itself():
    start = time.monotonic()
    out = run_handshakes([GOOD, WRONG, GOOD])
    assert time.monotonic() - start < 5  # detected, not timed out
    for r in (0, 2):
        assert isinstance(out[r], AuthenticationError)
        assert "agent 1 could not prove it holds this run's secret" in str(out[r])
    assert isinstance(out[1], AuthenticationError)
    assert "this agent's secret is most likely the wrong one" in str(out[1])
    assert out[1].help


def test_wrong_secret_excluded_when_configured():
    out = run_handshakes([GOOD, GOOD, WRONG, GOOD], on_failure="exclude")
    for r in (0, 1, 3):
        assert out[r].members == (0, 1, 3)
        assert 2 in out[r].excluded
        with pytest.raises(AuthenticationError, match="not an authenticated member"):
            out[r].pair_key(2, "x")
    assert isinstance(out[2], AuthenticationError)
    assert "not in an authenticated majority" in str(out[2])


def test_exclude_needs_a_strict_majority():
    out = run_handshakes([GOOD, WRONG], on_failure="exclude")
    assert all(isinstance(out[r], AuthenticationError) for r in (0, 1))


def test_missing_secret_fails_fast_everywhere():
    start = time.monotonic()
    out = run_handshakes([GOOD, None, GOOD], timeout_s=20)
    assert time.monotonic() - start < 5  # peers see the marker, they do not wait 20 s
    assert isinstance(out[1], AuthenticationError) and "has no run secret" in str(out[1])
    for r in (0, 2):
        assert isinstance(out[r], AuthenticationError)
        assert "agent 1 has no run secret" in str(out[r])


def test_absent_agent_times_out_cleanly():
    start = time.monotonic()
    out = run_handshakes([GOOD, GOOD, GOOD], timeout_s=1.0, skip={2})
    assert time.monotonic() - start < 5
    for r in (0, 1):
        assert isinstance(out[r], CommTimeoutError)
        assert "agent 2 did not join the handshake within 1 s" in str(out[r])


def test_absent_agent_excluded_when_configured():
    out = run_handshakes([GOOD] * 3, timeout_s=1.0, skip={2}, on_failure="exclude")
    assert out[0].members == out[1].members == (0, 1)


def test_garbage_on_the_store_is_a_failed_agent_not_a_crash():
    from datetime import timedelta

    from torch.distributed import TCPStore

    from ddla.security.identity import handshake

    store = TCPStore(
        "127.0.0.1", 0, None, True, timeout=timedelta(seconds=5), wait_for_workers=False
    )
    store.set("ddla/auth/hello/1", b"\xff not json")
    with pytest.raises(AuthenticationError, match="agent 1 sent a malformed hello"):
        handshake(store, rank=0, world_size=2, secret=GOOD, timeout_s=2)
    store.set("x/hello/1", '{"v": 1, "rank": 1, "pub": "00", "nonce": "00"}')
    with pytest.raises(AuthenticationError, match="malformed hello"):
        handshake(store, rank=0, world_size=2, secret=GOOD, timeout_s=2, prefix="x")
