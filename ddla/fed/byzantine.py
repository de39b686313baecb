"""Byzantine test bed (``fed.byzantine=K:KIND``): K seeded clients send malicious updates.

Kinds (Blanchard et al. 2017; Baruch et al. 2019; Fang et al. 2020 use these families):
``signflip`` sends ``-u``; ``scale:F`` sends ``F·u``; ``gaussian:SIGMA`` sends
``N(0, SIGMA²)`` noise in place of the update; ``labelflip`` trains honestly on labels
``C-1-y`` (data poisoning). The malicious ids depend on the seed only, so every agent and
every round agree on them.

Example:
    >>> parse_byzantine("2:scale:-5")
    Byzantine(count=2, kind='scale', value=-5.0)
    >>> sorted(malicious_clients(parse_byzantine("3:signflip"), clients=10, seed=0))
    [1, 2, 7]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ddla.errors import ConfigError

KINDS = ("signflip", "scale", "gaussian", "labelflip")


@dataclass(frozen=True, slots=True)
class Byzantine:
    """``count`` malicious clients of one ``kind`` with its parameter ``value``."""

    count: int
    kind: str
    value: float = 0.0

    def attack(self, update: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The update a malicious client sends instead of its honest ``update``."""
        if self.kind == "signflip":
            return -update
        if self.kind == "scale":
            return self.value * update
        if self.kind == "gaussian":
            return self.value * torch.randn(update.shape, generator=generator)
        return update  # labelflip poisons the data, not the update


def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(
        f"fed.byzantine: invalid spec {spec!r}: {why}",
        help="write K:KIND with KIND one of signflip, scale:F, gaussian:SIGMA, labelflip; "
        "e.g. --set fed.byzantine=2:signflip",
    )


def parse_byzantine(spec: str) -> Byzantine | None:
    """Parse ``K:KIND`` (empty = None: every client honest)."""
    spec = str(spec or "").strip()
    if not spec:
        return None
    count, _, rest = spec.partition(":")
    kind, _, arg = rest.partition(":")
    try:
        k = int(count)
    except ValueError:
        raise _bad(spec, f"K must be an integer, got {count!r}") from None
    if k < 1:
        raise _bad(spec, "K must be >= 1")
    if kind not in KINDS:
        raise _bad(spec, f"unknown kind {kind!r}")
    if kind in ("scale", "gaussian"):
        try:
            value = float(arg)
        except ValueError:
            raise _bad(spec, f"{kind} needs a number, got {arg!r}") from None
        if kind == "gaussian" and not value > 0:
            raise _bad(spec, "SIGMA must be > 0")
        return Byzantine(k, kind, value)
    if arg:
        raise _bad(spec, f"{kind} takes no parameter")
    return Byzantine(k, kind)


def malicious_clients(byz: Byzantine | None, *, clients: int, seed: int) -> frozenset[int]:
    """The ids of the malicious clients (seeded; the same on every agent)."""
    if byz is None:
        return frozenset()
    rng = np.random.default_rng([seed, 0xB12])
    return frozenset(int(c) for c in rng.choice(clients, size=byz.count, replace=False))
