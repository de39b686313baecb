import logging

import pytest

from ddla.errors import TamperedPayloadError
from ddla.security.audit import AuditLog
from ddla.security.envelope import HEADER_BYTES, Envelope


@pytest.fixture
def pair(sessions):
    s = sessions(3)
    return Envelope(s[0]), Envelope(s[1]), Envelope(s[2])


def test_roundtrip_compresses_and_hides_content(pair):
    a, b, _ = pair
    payload = b"class 3 sample " * 1000
    sealed = a.seal(payload, dst=1)
    assert len(sealed) < len(payload) / 10  # zstd before AES-GCM
    assert b"class 3" not in sealed
    assert b.open(sealed, src=0) == payload
    assert b.open(a.seal(b"", dst=1), src=0) == b""


@pytest.mark.parametrize("where", [0, 5, HEADER_BYTES - 1, HEADER_BYTES + 3, -1])
def test_flipped_byte_is_rejected(pair, where, caplog):
    a, b, _ = pair
    sealed = bytearray(a.seal(b"model weights" * 50, dst=1))
    sealed[where] ^= 0x01
    with caplog.at_level(logging.WARNING), pytest.raises(TamperedPayloadError):
        b.open(bytes(sealed), src=0)
    assert "rejected a payload from agent 0" in caplog.text
    # The channel still works for authentic payloads after a rejection.
    assert b.open(a.seal(b"ok", dst=1), src=0) == b"ok"


def test_replayed_payload_is_rejected_and_audited(pair, tmp_path):
    a, b, _ = pair
    b.audit = AuditLog.for_run(tmp_path, agent=1)
    first = a.seal(b"first", dst=1)
    assert b.open(first, src=0) == b"first"
    with pytest.raises(TamperedPayloadError, match="replayed payload: sequence 1"):
        b.open(first, src=0)
    second = a.seal(b"second", dst=1)
    third = a.seal(b"third", dst=1)
    assert b.open(third, src=0) == b"third"
    with pytest.raises(TamperedPayloadError, match="replayed"):  # reordered old one
        b.open(second, src=0)
    events = [line for line in (tmp_path / "audit" / "agent1.jsonl").read_text().splitlines()]
    assert len(events) == 2 and all('"reject"' in e for e in events)


def test_misdirected_and_reflected_payloads_are_rejected(pair):
    a, b, c = pair
    for_b = a.seal(b"for b", dst=1)
    with pytest.raises(TamperedPayloadError, match="addressed 0->1, expected 0->2"):
        c.open(for_b, src=0)
    with pytest.raises(TamperedPayloadError, match="addressed 0->1, expected 2->1"):
        b.open(for_b, src=2)
    # Rewriting the header to address it to c fails authentication (wrong key, bad AAD).
    forged = bytearray(for_b)
    forged[9:13] = (2).to_bytes(4, "big")
    with pytest.raises(TamperedPayloadError, match="tag mismatch"):
        c.open(bytes(forged), src=0)
    # A payload a sent to b cannot be reflected back to a as if b had sent it.
    with pytest.raises(TamperedPayloadError):
        a.open(for_b, src=1)


def test_truncated_payload(pair):
    a, b, _ = pair
    with pytest.raises(TamperedPayloadError, match="shorter"):
        b.open(a.seal(b"x", dst=1)[:20], src=0)


def test_forged_high_sequence_cannot_block_the_channel(pair):
    a, b, _ = pair
    sealed = bytearray(a.seal(b"x", dst=1))
    sealed[13:21] = (2**60).to_bytes(8, "big")
    with pytest.raises(TamperedPayloadError, match="tag mismatch"):
        b.open(bytes(sealed), src=0)
    assert b.open(a.seal(b"y", dst=1), src=0) == b"y"
