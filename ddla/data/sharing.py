"""Data sharing between agents: a replicated shared pool, and policy-checked pulls.

* ``data.share=shared:FRACTION``: before training every agent contributes that fraction of its
  shard to a pool that is replicated to all agents, which train on their shard plus the pool.
  This is the "globally shared data" remedy for non-IID data of Zhao et al. 2018, "Federated
  Learning with Non-IID Data" (arXiv:1806.00582): 5% shared data recovered about 30 points of
  accuracy on CIFAR-10 with one class per client.
* Pulls: during training an agent asks peers for samples (by class and count) or features
  (the owner's ``feature_fn`` applied to its samples). Each *owner* decides with its
  :class:`~ddla.security.policy.PolicyEnforcer` and answers with the data or a refusal.

Every payload is sealed (:class:`~ddla.security.envelope.Envelope`: zstd + AES-GCM, per-pair
keys, replay-proof) and sent point to point through the Transport under tag ``"data"``; tensors
travel in safetensors format, never pickled, so a peer cannot make this agent run code. Each
share, pull, refusal and denial is written to the audit log when one is given.

Example (the pure part: what agent 1 of 4 contributes at 5%):

    >>> import numpy as np
    >>> parse_share("shared:0.05")
    0.05
    >>> len(contribution(np.arange(1000), 0.05, seed=0, rank=1))
    50
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ddla.errors import AccessDeniedError, ConfigError, SecurityError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ddla.comm import Transport
    from ddla.security.audit import AuditLog
    from ddla.security.envelope import Envelope
    from ddla.security.policy import PolicyEnforcer

TAG = "data"


def parse_share(spec: str) -> float:
    """``"none"`` -> 0.0; ``"shared:F"`` or ``"features:F"`` -> F with 0 < F < 1.

    Raises ConfigError otherwise. :func:`share_kind` says which of the two it is.
    """
    if spec in ("none", ""):
        return 0.0
    name, _, arg = spec.partition(":")
    try:
        fraction = float(arg)
    except ValueError:
        fraction = -1.0
    if name not in ("shared", "features") or not 0.0 < fraction < 1.0:
        raise ConfigError(
            f"data.share: cannot read {spec!r}",
            help="use none, shared:FRACTION or features:FRACTION with 0 < FRACTION < 1, "
            "e.g. shared:0.05",
        )
    return fraction


def share_kind(spec: str) -> str:
    """The policy kind a ``data.share`` pool carries: ``features`` for ``features:F``, else
    ``samples``."""
    return "features" if spec.startswith("features:") else "samples"


def contribution(indices: np.ndarray, fraction: float, *, seed: int, rank: int) -> np.ndarray:
    """The indices (a sorted subset of this agent's shard) it gives to the shared pool.

    Deterministic for ``(seed, rank)``; at least one sample when ``fraction > 0``.
    """
    if fraction <= 0 or len(indices) == 0:
        return np.empty(0, dtype=np.int64)
    k = max(1, round(fraction * len(indices)))
    rng = np.random.default_rng([seed, rank, 0x5A4E])
    return np.sort(rng.choice(np.asarray(indices), size=k, replace=False)).astype(np.int64)


# ---- framing: bytes over tensor send/recv, sealed ---------------------------------------------


def send_sealed(
    transport: Transport, envelope: Envelope, payload: bytes, *, dst: int, tag: str = TAG
) -> None:
    """Seal ``payload`` for ``dst`` and send it (its length first, then the bytes)."""
    sealed = envelope.seal(payload, dst=dst)
    transport.send(torch.tensor([len(sealed)], dtype=torch.int64), dst=dst, tag=tag)
    transport.send(torch.frombuffer(bytearray(sealed), dtype=torch.uint8), dst=dst, tag=tag)


def recv_sealed(transport: Transport, envelope: Envelope, *, src: int, tag: str = TAG) -> bytes:
    """Receive one sealed payload from ``src`` and open it (raises TamperedPayloadError)."""
    size = transport.recv(torch.empty(1, dtype=torch.int64), src=src, tag=tag)
    n = int(size.item())
    if not 0 < n <= 2**31:
        raise SecurityError(f"agent {src} announced a payload of {n} bytes; refusing it")
    buf = transport.recv(torch.empty(n, dtype=torch.uint8), src=src, tag=tag)
    return envelope.open(buf.numpy().tobytes(), src=src)


def pack(meta: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> bytes:
    """A JSON header plus optional tensors in safetensors format (no pickle)."""
    head = json.dumps(meta).encode()
    body = st_save({k: v.contiguous() for k, v in tensors.items()}) if tensors else b""
    return struct.pack(">I", len(head)) + head + body


def unpack(data: bytes) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    (n,) = struct.unpack(">I", data[:4])
    meta = json.loads(data[4 : 4 + n])
    body = data[4 + n :]
    return meta, (st_load(body) if body else {})


def _pairs(world_size: int) -> list[tuple[int, int]]:
    # Every agent walks the pairs in the same global order with blocking send/recv: the first
    # unfinished pair always has both agents waiting on it, so this cannot deadlock.
    return [(i, j) for i in range(world_size) for j in range(i + 1, world_size)]


# ---- the shared pool ---------------------------------------------------------------------------


def exchange_pool(
    transport: Transport,
    envelope: Envelope,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    audit: AuditLog | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Give ``(x, y)`` (this agent's contribution) to every peer and get theirs.

    Returns the peers' contributions concatenated in rank order (this agent's own excluded:
    it already holds them). Collective: every agent calls it once, before training.
    """
    payload = pack({"samples": len(y)}, {"x": x, "y": y})
    got: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for i, j in _pairs(transport.world_size):
        if transport.rank not in (i, j):
            continue
        peer = j if transport.rank == i else i
        if transport.rank == i:
            send_sealed(transport, envelope, payload, dst=peer)
            data = recv_sealed(transport, envelope, src=peer)
        else:
            data = recv_sealed(transport, envelope, src=peer)
            send_sealed(transport, envelope, payload, dst=peer)
        _, tensors = unpack(data)
        got[peer] = (tensors["x"], tensors["y"])
        if audit is not None:
            audit.append("share", peer=peer, sent=len(y), received=len(tensors["y"]))
    if not got:
        return x[:0], y[:0]
    xs, ys = zip(*(got[p] for p in sorted(got)), strict=True)
    return torch.cat(xs), torch.cat(ys)


# ---- pulls -----------------------------------------------------------------------------------


@dataclass(kw_only=True, slots=True, frozen=True)
class PullRequest:
    """Ask one owner for ``count`` samples (or their features) of the given ``classes``."""

    classes: tuple[int, ...]
    count: int
    kind: str = "samples"


@dataclass(kw_only=True, slots=True)
class PullResult:
    """An owner's answer: ``granted`` samples in ``x``/``y`` (features for ``kind=features``)."""

    owner: int
    granted: int
    reason: str
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None

    @property
    def denied(self) -> bool:
        return self.granted == 0

    def raise_if_denied(self) -> PullResult:
        if self.denied:
            raise AccessDeniedError(
                f"agent {self.owner} refused the pull: {self.reason}",
                help="the owner's access policy (security.policy) does not allow this request",
            )
        return self


@dataclass(kw_only=True)
class DataOwner:
    """The owner side of pulls: this agent's data, its policy enforcer and an optional
    ``feature_fn`` (samples -> features) for ``kind="features"`` requests."""

    x: torch.Tensor
    y: torch.Tensor
    enforcer: PolicyEnforcer
    feature_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    seed: int = 0
    served: int = field(default=0, init=False)

    def answer(self, requester: int, request: dict[str, Any]) -> tuple[dict, dict]:
        """Decide one request; returns the response header and tensors (empty when refused)."""
        try:
            req = PullRequest(
                classes=tuple(int(c) for c in request["classes"]),
                count=int(request["count"]),
                kind=str(request.get("kind", "samples")),
            )
        except (KeyError, TypeError, ValueError):
            return {"granted": 0, "reason": "malformed request"}, {}
        if req.kind == "features" and self.feature_fn is None:
            return {"granted": 0, "reason": f"agent {self.enforcer.owner} offers no features"}, {}
        pool = np.flatnonzero(np.isin(self.y.numpy(), req.classes))
        wanted = min(max(req.count, 0), len(pool))
        if wanted == 0:
            return {"granted": 0, "reason": f"no samples of classes {list(req.classes)} here"}, {}
        decision = self.enforcer.decide(
            requester=requester, kind=req.kind, classes=req.classes, count=wanted
        )
        if not decision.allowed:
            return {"granted": 0, "reason": decision.reason}, {}
        rng = np.random.default_rng([self.seed, self.enforcer.owner, requester, self.served])
        self.served += 1
        idx = torch.from_numpy(np.sort(rng.choice(pool, size=decision.granted, replace=False)))
        x = self.x[idx]
        if req.kind == "features":
            with torch.no_grad():
                x = self.feature_fn(x)
        return {"granted": decision.granted, "reason": decision.reason}, {"x": x, "y": self.y[idx]}


def pull_round(
    transport: Transport,
    envelope: Envelope,
    owner: DataOwner,
    requests: dict[int, PullRequest],
    *,
    audit: AuditLog | None = None,
) -> dict[int, PullResult]:
    """One collective round of pulls: every agent calls it (possibly with no requests).

    ``requests`` maps owner rank -> what this agent asks of it. First the agents share who asks
    whom (one small all-gather), then each pair with a request exchanges sealed requests and
    answers. Returns this agent's results by owner; denials come back as refusals (and are
    audited on both sides), they do not raise.
    """
    rank, world = transport.rank, transport.world_size
    for peer in requests:
        if not 0 <= peer < world or peer == rank:
            raise ValueError(f"pull_round: cannot pull from agent {peer} (this is agent {rank})")
    asks = torch.zeros(world, dtype=torch.uint8)
    for peer in requests:
        asks[peer] = 1
    matrix = torch.stack(transport.all_gather(asks, tag=TAG))  # matrix[a, b]: a asks b
    results: dict[int, PullResult] = {}
    for i, j in _pairs(world):
        if rank not in (i, j) or not (matrix[i, j] or matrix[j, i]):
            continue
        peer = j if rank == i else i
        mine = requests.get(peer)
        req_out = pack({"request": None if mine is None else _as_dict(mine)})
        if rank == i:
            send_sealed(transport, envelope, req_out, dst=peer)
            theirs = unpack(recv_sealed(transport, envelope, src=peer))[0]["request"]
            send_sealed(transport, envelope, _serve(owner, peer, theirs, audit), dst=peer)
            answer = recv_sealed(transport, envelope, src=peer)
        else:
            theirs = unpack(recv_sealed(transport, envelope, src=peer))[0]["request"]
            send_sealed(transport, envelope, req_out, dst=peer)
            answer = recv_sealed(transport, envelope, src=peer)
            send_sealed(transport, envelope, _serve(owner, peer, theirs, audit), dst=peer)
        if mine is not None:
            results[peer] = _result(peer, mine, answer, audit)
    return results


def _as_dict(req: PullRequest) -> dict[str, Any]:
    return {"classes": list(req.classes), "count": req.count, "kind": req.kind}


def _serve(owner: DataOwner, peer: int, request: dict | None, audit: AuditLog | None) -> bytes:
    if request is None:
        return pack({"granted": 0, "reason": "no request"})
    meta, tensors = owner.answer(peer, request)
    if audit is not None:
        event = "serve" if meta["granted"] else "deny"
        audit.append(event, peer=peer, request=request, **meta)
    return pack(meta, tensors)


def _result(peer: int, req: PullRequest, answer: bytes, audit: AuditLog | None) -> PullResult:
    meta, tensors = unpack(answer)
    granted = int(meta.get("granted", 0))
    result = PullResult(
        owner=peer,
        granted=granted,
        reason=str(meta.get("reason", "")),
        x=tensors.get("x"),
        y=tensors.get("y"),
    )
    if granted and (result.y is None or len(result.y) != granted):
        raise SecurityError(f"agent {peer} said it granted {granted} samples but sent otherwise")
    if granted and not set(result.y.tolist()) <= set(req.classes):
        raise SecurityError(f"agent {peer} sent samples of classes it was not asked for")
    if audit is not None:
        event = "pull" if granted else "refusal"
        audit.append(event, peer=peer, request=_as_dict(req), granted=granted, reason=result.reason)
    return result
