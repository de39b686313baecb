"""Which ``sync.compress`` specs secure aggregation can mask — decided from the spec alone.

Pairwise masks cancel only in a *sum of values on a shared grid*. fp16, bf16, int8 and int4
become that: agents agree one scale per block, send integer codes, and the codes are summed in
a ring (:mod:`ddla.aggregate.secure`). The others cannot be masked without more protocol, so
the run is refused before any agent starts (fail closed), saying why:

Example:
    >>> refuse_unmaskable("int8")  # accepted: returns None
    >>> refuse_unmaskable("topk:0.01")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ddla.errors.ConfigError: security.secure_aggregation cannot mask sync.compress=topk:0.01: ...
"""

from __future__ import annotations

from ddla.errors import ConfigError

#: Compressor names whose means secure aggregation masks.
MASKABLE = ("none", "fp16", "bf16", "int8", "int4")

_WHY = {
    "topk": "top-k payloads carry each agent's own indices, so masked values would not line up "
    "in a sum and the indices themselves reveal the update",
    "powersgd": "PowerSGD's low-rank factors are multiplied, not added, so pairwise masks would "
    "not cancel",
}


def refuse_unmaskable(spec: str) -> None:
    """Raise a one-line :class:`ConfigError` when ``spec`` cannot be securely aggregated."""
    stages = [s.partition(":")[0].strip() for s in spec.split("+")]
    if len(stages) == 1 and stages[0] in MASKABLE:
        return
    if len(stages) > 1:
        why = "a chain re-encodes each agent's payload, so no stage is a plain sum of values"
    else:
        why = _WHY.get(stages[0], f"{stages[0]!r} payloads are not sums of values")
    raise ConfigError(
        f"security.secure_aggregation cannot mask sync.compress={spec}: {why}",
        help=f"use sync.compress={'|'.join(MASKABLE)} with secure aggregation "
        "(int8/int4 are masked at close to their compressed size)",
    )
