"""Security in a run: what an agent does at join, and the objects it trains with.

:func:`secure_join` is the agent's first act after its Transport exists: load the run secret,
authenticate over the rendezvous Store, open the audit log, and hand back an
:class:`AgentSecurity` holding the sealing envelope, the :class:`~ddla.aggregate.Protection`
its aggregation applies (masking, audit), and the data-sharing steps. Nothing else flows
before it returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ddla.checkpoint import checkpoint_key
from ddla.errors import AuthenticationError
from ddla.security.audit import AuditLog, audit_key
from ddla.security.envelope import Envelope
from ddla.security.identity import Session, handshake
from ddla.security.secagg import SecureAggregator
from ddla.security.secret import fingerprint, load_secret

if TYPE_CHECKING:
    from ddla.aggregate import Protection
    from ddla.comm import Transport
    from ddla.data.sharing import DataOwner
    from ddla.security.config import SecurityConfig

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class AgentSecurity:
    """One agent's authenticated state for the rest of the run."""

    session: Session
    envelope: Envelope
    transport: Transport
    protection: Protection
    audit: AuditLog | None
    config: SecurityConfig
    checkpoint_key: bytes | None = None
    """MACs checkpoint manifests (:func:`ddla.checkpoint.checkpoint_key` of the secret)."""

    def share_pool(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        shard: np.ndarray,
        *,
        fraction: float,
        seed: int,
        kind: str = "samples",
    ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """Contribute ``fraction`` of this shard to the shared pool and train on the pool too.

        ``kind="features"`` (``data.share=features:F``): ``x`` already holds the Job's
        extracted features, and the policy must grant peers kind ``features``.

        Returns ``(x', y', shard')``: the training tensors with the peers' contributions
        appended and this agent's index array extended to cover them.
        """
        from ddla.data.sharing import contribution, exchange_pool

        mine = torch.from_numpy(contribution(shard, fraction, seed=seed, rank=self.session.rank))
        self._check_share(y[mine], kind=kind)
        px, py = exchange_pool(self.transport, self.envelope, x[mine], y[mine], audit=self.audit)
        extra = np.arange(len(y), len(y) + len(py), dtype=np.int64)
        log.info("shared %d samples, received a pool of %d", len(mine), len(py))
        return torch.cat([x, px]), torch.cat([y, py]), np.concatenate([shard, extra])

    def _check_share(self, labels: torch.Tensor, *, kind: str = "samples") -> None:
        """Refuse to share unless this owner's policy lets every peer take these samples.

        The same rules as pulls (kind ``samples``, the classes shared, ``max_samples``), so a
        policy that would deny a peer's pull of these samples also refuses to share them.
        """
        from ddla.errors import AccessDeniedError
        from ddla.security.policy import AccessPolicy, PolicyEnforcer

        if self.config.policy is None:  # config validation refuses this; fail closed anyway
            raise AccessDeniedError("data.share needs security.policy")
        enforcer = PolicyEnforcer(AccessPolicy.load(self.config.policy), owner=self.session.rank)
        classes = sorted(set(labels.tolist()))
        for peer in range(self.session.world_size):
            if peer == self.session.rank:
                continue
            decision = enforcer.decide(
                requester=peer, kind=kind, classes=classes, count=len(labels)
            )
            if decision.granted < len(labels):
                if self.audit is not None:
                    self.audit.append("deny", peer=peer, share=len(labels), reason=decision.reason)
                raise AccessDeniedError(
                    f"data.share: agent {self.session.rank}'s policy does not let agent {peer} "
                    f"take its {len(labels)} shared {kind} ({decision.reason})",
                    help=f"grant peers '*' kind {kind} of these classes with max_samples at "
                    "least the shared count in security.policy, or drop data.share",
                )

    def puller(
        self,
        *,
        x: torch.Tensor,
        y: torch.Tensor,
        shard: np.ndarray,
        num_classes: int,
        every: int,
        count: int,
        seed: int,
    ) -> Puller:
        """Pulls during training: every ``every`` steps ask each peer for ``count`` samples of
        the classes this agent's shard lacks; owners answer under ``security.policy``."""
        from ddla.data.sharing import DataOwner
        from ddla.security.policy import AccessPolicy, PolicyEnforcer

        policy = AccessPolicy.load(self.config.policy) if self.config.policy else AccessPolicy()
        own = torch.from_numpy(shard)
        owner = DataOwner(
            x=x[own],
            y=y[own],
            enforcer=PolicyEnforcer(policy, owner=self.session.rank),
            seed=seed,
        )
        lacking = sorted(set(range(num_classes)) - set(y[own].tolist()))
        return Puller(self, owner, x=x, y=y, shard=shard, lacking=lacking, every=every, count=count)

    def close(self) -> None:
        """Record the agent's departure (durably, which also syncs earlier events)."""
        if self.audit is not None:
            agg = self.protection.masking
            self.audit.append("leave", secure_rounds=agg.round if agg else 0)


def _prefix() -> str:
    # A fresh namespace per elastic restart: the rendezvous store survives restarts and old
    # hellos must not be mistaken for new ones.
    return f"auth/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def secure_join(
    config: SecurityConfig, transport: Transport, run_dir: str | Path
) -> AgentSecurity | None:
    """Authenticate this agent to the run (collective) or return None when security is off.

    Raises :class:`~ddla.errors.AuthenticationError` (wrong or missing secret, here or at a
    peer) or :class:`~ddla.errors.CommTimeoutError` (a peer never joined); in both cases no
    model or data has been exchanged.
    """
    if not config.enabled:
        return None
    rank, world = transport.rank, transport.world_size
    try:
        secret = load_secret(config.secret_file)
    except AuthenticationError:
        # Tell the peers at once so they fail fast instead of waiting out the timeout.
        with contextlib.suppress(AuthenticationError):
            handshake(transport.store, rank=rank, world_size=world, secret=None, prefix=_prefix())
        raise
    key = audit_key(secret)
    audit = AuditLog.for_run(run_dir, agent=rank, key=key) if config.audit else None
    try:
        session = handshake(
            transport.store,
            rank=rank,
            world_size=world,
            secret=secret,
            timeout_s=config.timeout_s,
            prefix=_prefix(),
        )
    except AuthenticationError as exc:
        if audit is not None:
            audit.append("refuse", reason=str(exc), secret=fingerprint(secret))
        raise
    if audit is not None:
        audit.append("join", members=list(session.members), secret=fingerprint(secret))
    log.info("authenticated with %d agents (secret %s)", world, fingerprint(secret))
    from ddla.aggregate import Protection

    masking = (
        SecureAggregator(session, frac_bits=config.frac_bits) if config.secure_aggregation else None
    )
    return AgentSecurity(
        session=session,
        envelope=Envelope(session, audit=audit),
        transport=transport,
        protection=Protection(masking=masking, audit=audit),
        audit=audit,
        config=config,
        checkpoint_key=checkpoint_key(secret),
    )


class Puller:
    """State of an agent's pulls during a run: its growing training set and index array.

    Pull rounds are collective (every agent takes part, with or without requests) and
    deterministic, so a resumed run replays the rounds before its checkpoint and trains on the
    same data (:meth:`replay`).
    """

    def __init__(
        self,
        security: AgentSecurity,
        owner: DataOwner,
        *,
        x: torch.Tensor,
        y: torch.Tensor,
        shard: np.ndarray,
        lacking: list[int],
        every: int,
        count: int,
    ) -> None:
        self.security, self.owner = security, owner
        self.x, self.y, self.shard = x, y, shard
        self.lacking, self.every, self.count = lacking, every, count

    def due(self, step: int, steps: int) -> bool:
        """Whether a pull round follows optimizer step ``step`` (never after the last one)."""
        return step % self.every == 0 and step < steps

    def replay(self, start: int, steps: int) -> None:
        """Redo the rounds of steps ``<= start`` (a run resumed at ``start``)."""
        for step in range(self.every, start + 1, self.every):
            if self.due(step, steps):
                self.run()

    def run(self) -> None:
        from ddla.data.sharing import PullRequest, pull_round

        sec = self.security
        me, world = sec.session.rank, sec.session.world_size
        requests = {
            peer: PullRequest(classes=tuple(self.lacking), count=self.count)
            for peer in range(world)
            if peer != me and self.lacking
        }
        results = pull_round(sec.transport, sec.envelope, self.owner, requests, audit=sec.audit)
        got = [r for r in results.values() if not r.denied]
        for r in results.values():
            if r.denied:
                log.info("pull from agent %d refused: %s", r.owner, r.reason)
        if got:
            extra = np.arange(len(self.y), len(self.y) + sum(r.granted for r in got))
            self.x = torch.cat([self.x, *(r.x for r in got)])
            self.y = torch.cat([self.y, *(r.y for r in got)])
            self.shard = np.concatenate([self.shard, extra])
            log.info("pulled %d samples from %d agents", len(extra), len(got))
