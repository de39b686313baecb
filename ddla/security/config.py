"""Configuration of agent authentication, secure aggregation and auditing (``security.*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ddla.errors import ConfigError

if TYPE_CHECKING:
    from ddla.config import RunConfig


@dataclass(kw_only=True, slots=True)
class SecurityConfig:
    """Who may join a run, how updates are aggregated, and what is recorded.

    Example:
        >>> SecurityConfig(enabled=True, secret_file="run.key").on_auth_failure
        'abort'
    """

    enabled: bool = False
    """Authenticate agents with the run secret before any model or data flows (needed for
    ``data.share`` and pulls: their payloads are sealed with keys agreed at the handshake)."""
    secret_file: str | None = None
    """File written by ``ddla keygen``; else ``$DDLA_SECRET`` (hex) or ``$DDLA_SECRET_FILE``."""
    on_auth_failure: str = "abort"
    """What a run does when an agent fails authentication: ``abort`` (every agent stops with
    an error naming it). Excluding the agent and carrying on needs a Transport that can shrink
    its process group; :func:`ddla.security.identity.handshake` already supports ``exclude``."""
    timeout_s: float = 60.0
    """Seconds the join handshake waits for every agent."""
    secure_aggregation: bool = False
    """Mask every averaged update (gradients, pseudo-gradients, model averages) with pairwise
    masks so peers only ever see random-looking values; costs 2x the all-reduce bytes."""
    frac_bits: int = 24
    """Fixed-point fraction bits of secure aggregation (resolution 2**-frac_bits)."""
    audit: bool = True
    """Write the hash-chained audit log ``OUT/audit/agentN.jsonl`` (``ddla audit verify``)."""
    policy: str | None = None
    """Access policy file (YAML) for pulls and ``data.share``; without one every pull is
    denied and sharing is refused (samples leave an owner only as its policy allows)."""

    def __post_init__(self) -> None:
        if self.on_auth_failure != "abort":
            raise ConfigError(
                f"security.on_auth_failure: {self.on_auth_failure!r} is not supported by runs",
                help="use abort; a run cannot yet continue without an agent (the process group "
                "cannot shrink), though ddla.security.identity.handshake supports exclude",
            )
        if not self.timeout_s > 0:
            raise ConfigError(f"security.timeout_s must be > 0, got {self.timeout_s}")
        if not 8 <= self.frac_bits <= 40:
            raise ConfigError(f"security.frac_bits must be in 8..40, got {self.frac_bits}")
        if self.policy is not None:
            from ddla.security.policy import AccessPolicy

            AccessPolicy.load(self.policy)  # a broken policy fails now, not mid-run


def check_run(config: RunConfig) -> None:
    """Cross-section rules: data sharing and secure aggregation need authenticated agents."""
    sec = config.security
    share = getattr(config.data, "share", "none")
    if share != "none" and not sec.enabled:
        raise ConfigError(
            f"data.share={share} needs security.enabled=true",
            help="shared samples are sealed with per-pair keys agreed when agents authenticate: "
            "run `ddla keygen --out run.key` and add --set security.enabled=true "
            "--set security.secret_file=run.key",
        )
    if share != "none" and sec.enabled and sec.policy is None:
        raise ConfigError(
            f"data.share={share} needs security.policy",
            help="samples leave their owner only as its access policy allows, for shares as "
            "for pulls: give a policy whose rules let peers '*' take kind samples (max_samples "
            "at least the shared count); see README, Security and data sharing",
        )
    if getattr(config.data, "pull_every", 0) and not sec.enabled:
        raise ConfigError(
            "data.pull_every needs security.enabled=true",
            help="pulled samples are sealed and the owners' access policy needs authenticated "
            "requesters: add --set security.enabled=true --set security.secret_file=run.key",
        )
    if sec.secure_aggregation and not sec.enabled:
        raise ConfigError(
            "security.secure_aggregation needs security.enabled=true",
            help="the pairwise masks come from keys agreed when agents authenticate",
        )
    if sec.secure_aggregation:
        from ddla.aggregate.maskable import refuse_unmaskable

        refuse_unmaskable(config.sync.compress)
