"""Agent identity and the join handshake: prove the run secret, agree per-pair keys.

Every agent makes a fresh X25519 key pair and a random challenge nonce and publishes both on the
rendezvous ``Store`` (the control plane torch.distributed already provides). Once every hello is
in, each agent answers *all* challenges at once: ``HMAC-SHA256(secret, rank | transcript)`` where
the transcript hashes every agent's public key and nonce. The response is fresh for every
verifier (it covers the verifier's own nonce, so an old run's answers are useless) and it endorses
the agent's public key (a key swapped on the Store changes the transcript). An agent that does not
hold the secret cannot answer, is named by every honest agent, and learns nothing: the secret
never travels and nothing else is sent before the handshake succeeds.

Per-pair keys come from X25519 + HKDF-SHA256 salted with an HMAC of the transcript under the run
secret, so a pair key needs both the private key and the secret.

Example (one agent; a real run passes the rendezvous store of every agent):

    >>> from datetime import timedelta
    >>> from torch.distributed import TCPStore
    >>> store = TCPStore("127.0.0.1", 0, 1, True, timeout=timedelta(seconds=5))
    >>> session = handshake(store, rank=0, world_size=1, secret=bytes(32), timeout_s=5)
    >>> session.members
    (0,)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ddla.errors import AuthenticationError, CommTimeoutError, ConfigError

log = logging.getLogger(__name__)

ON_FAILURE = ("abort", "exclude")
_VERSION = 1


class Store(Protocol):
    """The part of ``torch.distributed.Store`` the handshake uses."""

    def set(self, key: str, value: str | bytes) -> None: ...
    def get(self, key: str) -> bytes: ...
    def check(self, keys: list[str]) -> bool: ...
    def compare_set(self, key: str, expected_value: str, desired_value: str) -> bytes: ...


@dataclass(kw_only=True, slots=True)
class Session:
    """What a successful handshake leaves an agent with.

    ``members`` are the agents that proved the secret (this one included); ``excluded`` maps each
    other rank to the reason it was left out (only non-empty with ``on_failure="exclude"``).
    """

    rank: int
    world_size: int
    members: tuple[int, ...]
    excluded: dict[int, str]
    transcript: bytes
    public_keys: dict[int, bytes]
    _pair_keys: dict[int, bytes] = field(repr=False)

    def pair_key(self, peer: int, purpose: str) -> bytes:
        """A 32-byte key shared only with ``peer``, distinct for every ``purpose``."""
        if peer not in self._pair_keys:
            raise AuthenticationError(
                f"agent {self.rank} shares no key with agent {peer}: it is not an authenticated "
                f"member (members: {list(self.members)})"
            )
        return _hkdf(self._pair_keys[peer], salt=b"", info=f"ddla/{purpose}/v1".encode())


def _hkdf(ikm: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"|".join(parts), hashlib.sha256).digest()


def _agree(store: Store, keys: dict[int, str], timeout_s: float, name: str) -> set[int]:
    """Wait until every key exists or the timeout passes, then agree on who made it.

    Agents reach their deadlines at slightly different times and could disagree about a peer
    that answered just in time. The first agent to finish writes its view with ``compare_set``
    (first writer wins) and every agent adopts that view, so all agree on the same set.
    """
    deadline = time.monotonic() + timeout_s
    missing = set(keys)
    pause = 0.01
    while missing:
        missing = {r for r in missing if not store.check([keys[r]])}
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.2)
    view = json.dumps(sorted(set(keys) - missing))
    return set(json.loads(store.compare_set(name, "", view)))


def handshake(
    store: Store,
    *,
    rank: int,
    world_size: int,
    secret: bytes | None,
    timeout_s: float = 60.0,
    on_failure: str = "abort",
    prefix: str = "ddla/auth",
) -> Session:
    """Authenticate this agent to its peers and agree per-pair keys with each of them.

    Every agent of the run calls this with the same ``store`` and ``prefix`` (use a fresh prefix
    per rendezvous attempt). With ``secret=None`` the agent tells its peers it has no secret, so
    they fail fast, and raises. Failure handling:

    * ``on_failure="abort"``: any agent that fails or does not join makes every agent raise
      :class:`~ddla.errors.AuthenticationError` (or :class:`~ddla.errors.CommTimeoutError` for
      agents that never joined) naming it.
    * ``on_failure="exclude"``: agents that fail are left out of ``Session.members`` and the
      rest carry on, as long as they are a strict majority; an agent outside the majority raises.
    """
    if on_failure not in ON_FAILURE:
        raise ConfigError(
            f"security.on_auth_failure: unknown value {on_failure!r}",
            help=f"choose one of: {', '.join(ON_FAILURE)}",
        )
    hello_keys = {r: f"{prefix}/hello/{r}" for r in range(world_size)}
    if secret is None:
        store.set(hello_keys[rank], json.dumps({"v": _VERSION, "rank": rank, "error": "no secret"}))
        raise AuthenticationError(
            f"agent {rank} has no run secret and cannot join",
            help="give every agent the same secret (ddla keygen; security.secret_file)",
        )
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    nonce = os.urandom(32)
    hello = {"v": _VERSION, "rank": rank, "pub": public.hex(), "nonce": nonce.hex()}
    store.set(hello_keys[rank], json.dumps(hello))

    failed: dict[int, str] = {}
    joined = _agree(store, hello_keys, timeout_s, f"{prefix}/joined")
    if rank not in joined:
        raise CommTimeoutError(
            f"agent {rank} joined the handshake after the others closed it",
            help="start every agent within security.timeout_s of each other",
        )
    for r in sorted(set(hello_keys) - joined):
        failed[r] = f"did not join the handshake within {timeout_s:g} s"
    hellos: dict[int, dict] = {}
    for r in sorted(joined):
        msg = _parse_hello(store.get(hello_keys[r]), r)
        if msg is None:
            failed[r] = "sent a malformed hello"
        elif "error" in msg:
            failed[r] = f"has no run secret ({msg['error']})"
        elif msg.get("v") != _VERSION:
            failed[r] = f"speaks handshake version {msg.get('v')}, this agent {_VERSION}"
        else:
            hellos[r] = msg
    if on_failure == "abort" and failed:
        _raise(rank, world_size, failed)

    # The transcript binds every agent's key and challenge; answering it proves the secret.
    transcript = hashlib.sha256(
        b"".join(f"{r}|{hellos[r]['pub']}|{hellos[r]['nonce']}|".encode() for r in sorted(hellos))
    ).digest()
    resp_keys = {r: f"{prefix}/resp/{r}" for r in hellos}
    store.set(resp_keys[rank], _mac(secret, b"resp", str(rank).encode(), transcript).hex())
    answered = _agree(store, resp_keys, timeout_s, f"{prefix}/answered")
    if rank not in answered:
        raise CommTimeoutError(f"agent {rank} answered the challenge after the others closed it")
    for r in sorted(set(resp_keys) - answered):
        failed[r] = f"did not answer the challenge within {timeout_s:g} s"
    for r in sorted(answered - {rank}):
        expected = _mac(secret, b"resp", str(r).encode(), transcript)
        try:
            got = bytes.fromhex(store.get(resp_keys[r]).decode())
        except (UnicodeDecodeError, ValueError):
            got = b""
        if not hmac.compare_digest(expected, got):
            failed[r] = "could not prove it holds this run's secret"
    members = tuple(r for r in range(world_size) if r not in failed)
    if failed and (on_failure == "abort" or len(members) * 2 <= world_size):
        _raise(rank, world_size, failed, majority=on_failure == "exclude")
    for r, why in sorted(failed.items()):
        log.warning("agent %d excluded agent %d: %s", rank, r, why)

    salt = _mac(secret, b"pair-salt", transcript)
    pair_keys = {}
    for r in members:
        if r == rank:
            continue
        shared = private.exchange(
            X25519PublicKey.from_public_bytes(bytes.fromhex(hellos[r]["pub"]))
        )
        lo, hi = min(r, rank), max(r, rank)
        pair_keys[r] = _hkdf(shared, salt=salt, info=f"ddla/pair/v1|{lo}|{hi}".encode())
    return Session(
        rank=rank,
        world_size=world_size,
        members=members,
        excluded=dict(failed),
        transcript=transcript,
        public_keys={r: bytes.fromhex(hellos[r]["pub"]) for r in members},
        _pair_keys=pair_keys,
    )


def _parse_hello(raw: bytes, rank: int) -> dict | None:
    """A peer's hello, or None when it is not one (wrong rank, bad key or nonce sizes)."""
    try:
        msg = json.loads(raw)
        if not isinstance(msg, dict) or msg.get("rank") != rank:
            return None
        complete = (
            "error" in msg
            or msg.get("v") != _VERSION
            or (len(bytes.fromhex(msg["pub"])) == 32 and len(bytes.fromhex(msg["nonce"])) == 32)
        )
        return msg if complete else None
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def _raise(rank: int, world_size: int, failed: dict[int, str], *, majority: bool = False) -> None:
    names = "; ".join(f"agent {r} {why}" for r, why in sorted(failed.items()))
    only_missing = all("did not" in why for why in failed.values())
    if only_missing:
        raise CommTimeoutError(
            f"agent {rank}: authentication handshake incomplete: {names}",
            help="check that every agent started and can reach the rendezvous store",
        )
    if majority:
        message = f"agent {rank} is not in an authenticated majority: {names}"
    elif len(failed) == world_size - 1 > 1 and all("prove" in w for w in failed.values()):
        message = (
            f"agent {rank}: no peer could be verified with this agent's secret, so this "
            f"agent's secret is most likely the wrong one: {names}"
        )
    else:
        message = f"agent {rank}: authentication failed: {names}"
    raise AuthenticationError(
        message,
        help="every agent must hold the same run secret (wrong or missing secret file?); "
        "if this agent is the odd one out, its own secret is the wrong one",
    )
