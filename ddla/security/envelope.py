"""Sealed payloads: zstandard-compressed, AES-256-GCM encrypted and authenticated, replay-proof.

Everything ddla sends point to point that is data (shared samples, pulled samples or features,
a model pulled by a peer) goes through :meth:`Envelope.seal` and :meth:`Envelope.open`.

Wire format (33-byte header, all of it authenticated as AES-GCM associated data)::

    b"DDLA" | version u8 | sender u32 | receiver u32 | sequence u64 | nonce 12 B | ciphertext+tag

* Keys are per pair *and* per direction (``sender->receiver``), derived from the handshake's
  X25519 pair key with HKDF, so a payload cannot be reflected back to its sender or redirected.
* The sequence number rises by one per payload and direction; the receiver accepts only numbers
  above the last it accepted, so a replayed (or reordered) payload is refused. It is checked
  *after* authentication, so a forged header cannot advance the counter.
* Compression happens before encryption (ciphertext does not compress). Compressed length leaks
  some information about content; ddla payloads mix no attacker-chosen bytes with secrets, which
  is what CRIME-style attacks need.

Example (two agents in one process over a real TCPStore):

    >>> import threading
    >>> from datetime import timedelta
    >>> from torch.distributed import TCPStore
    >>> from ddla.security.identity import handshake
    >>> master = TCPStore("127.0.0.1", 0, 2, True, timeout=timedelta(seconds=5),
    ...                   wait_for_workers=False)
    >>> other = TCPStore("127.0.0.1", master.port, 2, False, timeout=timedelta(seconds=5))
    >>> out = {}
    >>> def join(store, rank):
    ...     out[rank] = handshake(store, rank=rank, world_size=2, secret=b"k" * 32, timeout_s=5)
    >>> stores = [master, other]
    >>> threads = [threading.Thread(target=join, args=(s, r)) for r, s in enumerate(stores)]
    >>> _ = [t.start() for t in threads]; _ = [t.join() for t in threads]
    >>> sealed = Envelope(out[0]).seal(b"hello", dst=1)
    >>> Envelope(out[1]).open(sealed, src=0)
    b'hello'
"""

from __future__ import annotations

import logging
import os
import struct
from typing import TYPE_CHECKING, NoReturn

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ddla.errors import TamperedPayloadError

if TYPE_CHECKING:
    from ddla.security.audit import AuditLog
    from ddla.security.identity import Session

log = logging.getLogger(__name__)

MAGIC = b"DDLA"
VERSION = 1
_HEADER = struct.Struct(">4sBIIQ12s")
HEADER_BYTES = _HEADER.size
#: A payload never decompresses past this (a zstd bomb from a peer must not exhaust memory).
MAX_PAYLOAD_BYTES = 2**31


class Envelope:
    """Seals payloads for, and opens payloads from, the authenticated peers of one agent.

    One instance per agent and run: it holds the sequence counters that make replays fail.
    Refusals raise :class:`~ddla.errors.TamperedPayloadError`, are logged and, when an
    ``audit`` log is given, recorded as ``reject`` events.
    """

    def __init__(self, session: Session, *, audit: AuditLog | None = None, level: int = 3) -> None:
        self.session = session
        self.rank = session.rank
        self.audit = audit
        self._cctx = zstandard.ZstdCompressor(level=level)
        self._dctx = zstandard.ZstdDecompressor()
        self._ciphers: dict[tuple[int, int], AESGCM] = {}
        self._next_seq: dict[int, int] = {}
        self._last_seen: dict[int, int] = {}

    def _cipher(self, sender: int, receiver: int) -> AESGCM:
        pair = (sender, receiver)
        if pair not in self._ciphers:
            peer = receiver if sender == self.rank else sender
            key = self.session.pair_key(peer, f"envelope|{sender}->{receiver}")
            self._ciphers[pair] = AESGCM(key)
        return self._ciphers[pair]

    def seal(self, payload: bytes, *, dst: int) -> bytes:
        """Compress, encrypt and authenticate ``payload`` for agent ``dst``."""
        seq = self._next_seq.get(dst, 1)
        self._next_seq[dst] = seq + 1
        header = _HEADER.pack(MAGIC, VERSION, self.rank, dst, seq, os.urandom(12))
        body = self._cipher(self.rank, dst).encrypt(
            header[-12:], self._cctx.compress(payload), header
        )
        return header + body

    def open(self, sealed: bytes, *, src: int) -> bytes:
        """Authenticate, decrypt and decompress a payload that agent ``src`` sealed for us."""
        if len(sealed) < HEADER_BYTES + 16:
            self._reject(src, f"payload of {len(sealed)} bytes is shorter than a sealed envelope")
        header = sealed[:HEADER_BYTES]
        magic, version, sender, receiver, seq, nonce = _HEADER.unpack(header)
        if magic != MAGIC or version != VERSION:
            self._reject(src, "not a ddla envelope (bad magic or version)")
        if sender != src or receiver != self.rank:
            self._reject(src, f"addressed {sender}->{receiver}, expected {src}->{self.rank}")
        try:
            compressed = self._cipher(src, self.rank).decrypt(nonce, sealed[HEADER_BYTES:], header)
        except InvalidTag:
            self._reject(src, "authentication tag mismatch (tampered, truncated or wrong key)")
        if seq <= self._last_seen.get(src, 0):
            self._reject(
                src, f"replayed payload: sequence {seq}, last accepted {self._last_seen[src]}"
            )
        self._last_seen[src] = seq
        try:
            return self._dctx.decompress(compressed, max_output_size=MAX_PAYLOAD_BYTES)
        except zstandard.ZstdError as exc:  # authentic but undecodable: a sender bug
            self._reject(src, f"authentic payload does not decompress: {exc}")

    def _reject(self, src: int, why: str) -> NoReturn:
        log.warning("agent %d rejected a payload from agent %d: %s", self.rank, src, why)
        if self.audit is not None:
            self.audit.append("reject", peer=src, reason=why)
        raise TamperedPayloadError(
            f"agent {self.rank} rejected a payload from agent {src}: {why}",
            help="a peer or the network altered or replayed data; the payload was discarded",
        )
