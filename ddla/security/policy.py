"""Access policy for pulls: per owner agent, which peers may pull what, and how much.

The *owner* of the data enforces its own section (:class:`PolicyEnforcer`), so a requester can
never grant itself access. A policy file (YAML)::

    default: deny            # what an owner without a section (or no matching rule) answers
    agents:
      0:                     # owner agent 0
        - peers: [1, 2]      # who may pull ("*": every peer)
          kinds: [samples]   # samples and/or features
          classes: [0, 1]    # which labels ("*": all)
          max_samples: 200   # total per requesting peer over the run
      "*":                   # every other owner
        - peers: "*"
          kinds: [features]
          classes: "*"
          max_samples: 50

Example:
    >>> policy = AccessPolicy.from_dict({"agents": {0: [{"peers": [1], "kinds": ["samples"],
    ...     "classes": [3], "max_samples": 10}]}})
    >>> enforcer = PolicyEnforcer(policy, owner=0)
    >>> enforcer.decide(requester=1, kind="samples", classes=[3], count=8).granted
    8
    >>> enforcer.decide(requester=1, kind="samples", classes=[3], count=8).granted
    2
    >>> enforcer.decide(requester=2, kind="samples", classes=[3], count=1).allowed
    False
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ddla.errors import ConfigError

KINDS = ("samples", "features")


@dataclass(kw_only=True, slots=True, frozen=True)
class Rule:
    """One grant: ``peers`` may pull ``kinds`` of ``classes``, ``max_samples`` in total each."""

    peers: frozenset[int] | None  # None: every peer
    kinds: frozenset[str]
    classes: frozenset[int] | None  # None: every class
    max_samples: int

    def matches(self, requester: int, kind: str, classes: Sequence[int]) -> bool:
        return (
            (self.peers is None or requester in self.peers)
            and kind in self.kinds
            and (self.classes is None or set(classes) <= self.classes)
        )


def _ints(value: Any, where: str) -> frozenset[int] | None:
    if value == "*":
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
        raise ConfigError(f"policy {where}: expected a list of integers or '*', got {value!r}")
    return frozenset(value)


def _rule(raw: Any, where: str) -> Rule:
    if not isinstance(raw, dict):
        raise ConfigError(f"policy {where}: a rule must be a mapping, got {raw!r}")
    unknown = set(raw) - {"peers", "kinds", "classes", "max_samples"}
    if unknown:
        raise ConfigError(
            f"policy {where}: unknown key(s) {sorted(unknown)}",
            help="a rule has: peers, kinds, classes, max_samples",
        )
    kinds = raw.get("kinds", list(KINDS))
    if not isinstance(kinds, list) or not set(kinds) <= set(KINDS) or not kinds:
        raise ConfigError(
            f"policy {where}.kinds: expected a subset of {list(KINDS)}, got {kinds!r}"
        )
    max_samples = raw.get("max_samples")
    if not isinstance(max_samples, int) or max_samples < 0:
        raise ConfigError(
            f"policy {where}.max_samples: expected an integer >= 0, got {max_samples!r}",
            help="every rule must bound how many samples a peer may pull",
        )
    return Rule(
        peers=_ints(raw.get("peers"), f"{where}.peers"),
        kinds=frozenset(kinds),
        classes=_ints(raw.get("classes", "*"), f"{where}.classes"),
        max_samples=max_samples,
    )


@dataclass(kw_only=True, slots=True)
class AccessPolicy:
    """Parsed policy: rules per owner (key ``None`` is the ``"*"`` section)."""

    default: str = "deny"
    rules: dict[int | None, list[Rule]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AccessPolicy:
        if not isinstance(raw, dict):
            raise ConfigError(f"policy: expected a mapping, got {type(raw).__name__}")
        default = raw.get("default", "deny")
        if default not in ("deny", "allow"):
            raise ConfigError(f"policy default: {default!r}", help="choose one of: deny, allow")
        rules: dict[int | None, list[Rule]] = {}
        for owner, items in (raw.get("agents") or {}).items():
            key = None if owner == "*" else owner
            if key is not None and not isinstance(key, int):
                raise ConfigError(f"policy agents: owner {owner!r} must be a rank or '*'")
            if not isinstance(items, list):
                raise ConfigError(f"policy agents.{owner}: expected a list of rules")
            rules[key] = [_rule(r, f"agents.{owner}[{i}]") for i, r in enumerate(items)]
        return cls(default=default, rules=rules)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AccessPolicy:
        """Read a YAML policy file; errors name the file and the offending entry."""
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"security.policy: file {path} does not exist", help="see README: Data sharing"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"security.policy: {path} is not valid YAML: {exc}") from exc
        return cls.from_dict(raw or {})

    def rules_for(self, owner: int) -> list[Rule]:
        return self.rules.get(owner, self.rules.get(None, []))


@dataclass(kw_only=True, slots=True, frozen=True)
class Decision:
    """An owner's answer: how many samples are ``granted`` (0 when refused) and why."""

    allowed: bool
    granted: int
    reason: str


class PolicyEnforcer:
    """The owner side: decides each request and counts what each peer has pulled so far."""

    def __init__(self, policy: AccessPolicy, *, owner: int) -> None:
        self.policy = policy
        self.owner = owner
        self.pulled: dict[int, int] = {}

    def decide(self, *, requester: int, kind: str, classes: Sequence[int], count: int) -> Decision:
        if kind not in KINDS:
            return Decision(allowed=False, granted=0, reason=f"unknown kind {kind!r}")
        if requester == self.owner:
            return Decision(allowed=False, granted=0, reason="an agent does not pull from itself")
        rules = [
            r for r in self.policy.rules_for(self.owner) if r.matches(requester, kind, classes)
        ]
        if not rules:
            if self.policy.default == "allow":
                self.pulled[requester] = self.pulled.get(requester, 0) + count
                return Decision(allowed=True, granted=count, reason="policy default: allow")
            return Decision(
                allowed=False,
                granted=0,
                reason=f"no rule of agent {self.owner} lets agent {requester} pull {kind} of "
                f"classes {sorted(classes)}",
            )
        quota = max(r.max_samples for r in rules)
        used = self.pulled.get(requester, 0)
        granted = max(0, min(count, quota - used))
        if granted == 0:
            return Decision(
                allowed=False,
                granted=0,
                reason=f"agent {requester} used its quota of {quota} samples from agent "
                f"{self.owner}",
            )
        self.pulled[requester] = used + granted
        why = "granted" if granted == count else f"granted {granted} of {count} (quota {quota})"
        return Decision(allowed=True, granted=granted, reason=why)
