"""Byzantine-robust aggregation rules over individual client updates (one rule per file).

A rule maps a ``[K, D]`` stack of client updates to one ``[D]`` update. Spec strings
(``fed.aggregate``): ``mean`` (the weighted mean, no stack needed), ``median``,
``trimmed_mean:BETA``, ``krum:F``, ``multikrum:F,M``, ``bulyan:F``. Robust rules need every
update individually, so they cannot run under secure aggregation, which only reveals the sum
(:func:`refuse_robust_secure`). Updates with NaN/Inf are rejected before any rule sees them.

Example:
    >>> import torch
    >>> rule = parse_rule("trimmed_mean:0.2")
    >>> rule(torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]])).tolist()
    [2.0]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ddla.aggregate.robust.bulyan import bulyan
from ddla.aggregate.robust.clip import clip_norm
from ddla.aggregate.robust.krum import krum, krum_scores, multikrum
from ddla.aggregate.robust.median import median
from ddla.aggregate.robust.trimmed_mean import trimmed_mean
from ddla.errors import ConfigError

RULE_FORMS = "mean, median, trimmed_mean:BETA (0<=BETA<0.5), krum:F, multikrum:F,M, bulyan:F"


@dataclass(frozen=True, slots=True)
class RobustRule:
    """A parsed rule: ``name``, its parameters, and the smallest update count it accepts."""

    name: str
    beta: float = 0.0
    f: int = 0
    m: int = 1

    @property
    def robust(self) -> bool:
        """True when the rule needs individual updates (anything but ``mean``)."""
        return self.name != "mean"

    def min_updates(self) -> int:
        """Fewest updates the rule is defined for (Krum: K > 2F + 2; Bulyan: K >= 4F + 3)."""
        return {"krum": 2 * self.f + 3, "multikrum": max(2 * self.f + 3, self.m),
                "bulyan": 4 * self.f + 3}.get(self.name, 1)  # fmt: skip

    def __call__(self, updates: torch.Tensor) -> torch.Tensor:
        fn: dict[str, Callable[[], torch.Tensor]] = {
            "mean": lambda: updates.mean(dim=0),
            "median": lambda: median(updates),
            "trimmed_mean": lambda: trimmed_mean(updates, beta=self.beta),
            "krum": lambda: krum(updates, f=self.f),
            "multikrum": lambda: multikrum(updates, f=self.f, m=self.m),
            "bulyan": lambda: bulyan(updates, f=self.f),
        }
        return fn[self.name]()


def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(
        f"fed.aggregate: invalid rule {spec!r}: {why}",
        help=f"allowed forms: {RULE_FORMS}; e.g. --set fed.aggregate=trimmed_mean:0.1",
    )


def parse_rule(spec: str) -> RobustRule:
    """Validate a rule spec and return it.

    Example:
        >>> parse_rule("multikrum:2,5")
        RobustRule(name='multikrum', beta=0.0, f=2, m=5)
    """
    name, sep, arg = str(spec).strip().partition(":")
    if name in ("mean", "median"):
        if sep:
            raise _bad(spec, f"{name} takes no parameter")
        return RobustRule(name)
    if name not in ("trimmed_mean", "krum", "multikrum", "bulyan"):
        raise _bad(spec, f"unknown rule {name!r}")
    if not arg:
        raise _bad(spec, f"{name} needs a parameter")
    try:
        if name == "trimmed_mean":
            beta = float(arg)
            if not 0 <= beta < 0.5:
                raise _bad(spec, f"BETA must be in [0, 0.5), got {beta}")
            return RobustRule(name, beta=beta)
        parts = [int(a) for a in arg.split(",")]
    except ValueError:
        raise _bad(spec, f"bad parameter {arg!r}") from None
    if name == "multikrum":
        if len(parts) != 2 or parts[0] < 0 or parts[1] < 1:
            raise _bad(spec, "multikrum takes F,M with F >= 0 and M >= 1")
        return RobustRule(name, f=parts[0], m=parts[1])
    if len(parts) != 1 or parts[0] < 0:
        raise _bad(spec, f"{name} takes one integer F >= 0")
    return RobustRule(name, f=parts[0])


def refuse_robust_secure(rule: str, secure_aggregation: bool) -> None:
    """Refuse a robust rule under secure aggregation: masking reveals only the sum of the
    updates, and median/trimmed mean/Krum/Bulyan need each update on its own."""
    if secure_aggregation and parse_rule(rule).robust:
        raise ConfigError(
            f"fed.aggregate={rule} cannot run with security.secure_aggregation=true",
            help="robust rules need individual client updates and secure aggregation reveals "
            "only their sum: use fed.aggregate=mean (with fed.clip to bound each client), or "
            "turn secure aggregation off",
        )


__all__ = [
    "RULE_FORMS",
    "RobustRule",
    "bulyan",
    "clip_norm",
    "krum",
    "krum_scores",
    "median",
    "multikrum",
    "parse_rule",
    "refuse_robust_secure",
    "trimmed_mean",
]
