"""Link profiles: what a wide-area link between agents costs (bandwidth and latency).

A :class:`LinkProfile` is one link: bits per second and a one-way latency per message. Named
profiles cover the cases the design documents care about, from one machine (``lan``: no
shaping) to a far edge site; a spec like ``"100mbit:25ms"`` gives any other link. A
:class:`LinkTable` places agents on links: every agent uses the default profile, and
``overrides`` put chosen agents behind another link (one agent in a far data center). The link
between two agents is the worse of their two links: the smaller bandwidth and the larger
latency, because a message crosses both.

Example:
    >>> table = LinkTable.build("wan-100", {3: "edge"}, world_size=4)
    >>> table.edge(0, 1).bandwidth_bps, table.edge(0, 1).latency_s
    (100000000.0, 0.025)
    >>> table.edge(2, 3).name
    'edge'
    >>> parse_profile("10gbit:1ms").latency_s
    0.001
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ddla.errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkProfile:
    """One link: ``bandwidth_bps`` bits per second and ``latency_s`` one-way seconds per message.

    Example:
        >>> LinkProfile(name="x", bandwidth_bps=8e6, latency_s=0.01).transfer_s(1_000_000)
        1.01
    """

    name: str
    """The profile's name (a registry key or the spec it was parsed from)."""
    bandwidth_bps: float
    """Bits per second; ``math.inf`` means no bandwidth limit."""
    latency_s: float
    """One-way latency paid by every message, in seconds."""

    def __post_init__(self) -> None:
        if not (self.bandwidth_bps > 0):  # also rejects NaN
            raise ConfigError(
                f"link {self.name!r}: bandwidth must be > 0 bit/s, got {self.bandwidth_bps}",
                help="give a positive rate, e.g. comm.link=100mbit:25ms",
            )
        if not (self.latency_s >= 0) or math.isinf(self.latency_s):
            raise ConfigError(
                f"link {self.name!r}: latency must be a finite number >= 0 s, got {self.latency_s}",
                help="give a non-negative delay, e.g. comm.link=100mbit:25ms",
            )

    @property
    def shaped(self) -> bool:
        """False for a link that costs nothing (``lan``): emulation can skip it entirely."""
        return math.isfinite(self.bandwidth_bps) or self.latency_s > 0

    def transfer_s(self, nbytes: float) -> float:
        """Seconds one message of ``nbytes`` takes on this link: latency + bits / bandwidth."""
        return self.latency_s + nbytes * 8.0 / self.bandwidth_bps


def _p(name: str, bandwidth_bps: float, latency_s: float) -> LinkProfile:
    return LinkProfile(name=name, bandwidth_bps=bandwidth_bps, latency_s=latency_s)


#: Named profiles. Latency is one-way per message (``wan-100``: 50 ms round trip = 25 ms each way).
PROFILES: dict[str, LinkProfile] = {
    "lan": _p("lan", math.inf, 0.0),
    "dc": _p("dc", 10e9, 0.001),
    "wan": _p("wan", 1e9, 0.025),
    "wan-100": _p("wan-100", 100e6, 0.025),
    "edge": _p("edge", 20e6, 0.080),
}

_RATE_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_SPEC = re.compile(
    r"^\s*(?P<rate>[-+]?[0-9.eE+-]+|inf)\s*(?P<ru>[a-z]*)\s*:\s*"
    r"(?P<lat>[-+]?[0-9.eE+-]+)\s*(?P<lu>[a-z]*)\s*$"
)
_SPEC_HELP = (
    f"use a profile name ({', '.join(PROFILES)}) or RATE:DELAY such as 100mbit:25ms "
    f"(rate units {', '.join(_RATE_UNITS)}; delay units {', '.join(_TIME_UNITS)})"
)


def parse_profile(spec: str | LinkProfile) -> LinkProfile:
    """A profile from a registry name (``"wan-100"``) or a ``RATE:DELAY`` spec (``"1gbit:5ms"``).

    Raises:
        ConfigError: unknown name, malformed spec, non-positive bandwidth or negative latency.
    """
    if isinstance(spec, LinkProfile):
        return spec
    text = str(spec).strip().lower()
    if text in PROFILES:
        return PROFILES[text]
    match = _SPEC.match(text)
    if match is None:
        raise ConfigError(f"unknown link profile {spec!r}", help=_SPEC_HELP)
    rate_unit, lat_unit = match["ru"] or "bit", match["lu"] or "s"
    if rate_unit not in _RATE_UNITS or lat_unit not in _TIME_UNITS:
        raise ConfigError(f"link {spec!r}: unknown unit", help=_SPEC_HELP)
    try:
        rate = float(match["rate"]) * _RATE_UNITS[rate_unit]
        latency = float(match["lat"]) * _TIME_UNITS[lat_unit]
    except ValueError:
        raise ConfigError(f"link {spec!r}: not a number", help=_SPEC_HELP) from None
    return LinkProfile(name=text, bandwidth_bps=rate, latency_s=latency)


def parse_overrides(
    overrides: str | Mapping[int | str, str] | Sequence[str] | None,
) -> dict[int, str]:
    """Normalise per-agent overrides to ``{rank: spec}``; every spec is checked.

    Accepts ``"2=wan-100,3=edge"``, ``["2=wan-100"]`` or ``{2: "wan-100"}``.

    Example:
        >>> parse_overrides("2=wan-100, 3=edge")
        {2: 'wan-100', 3: 'edge'}
    """
    if overrides is None or overrides == "":
        return {}
    if isinstance(overrides, str):
        items: list[tuple[object, object]] = [
            _split_item(part) for part in overrides.split(",") if part.strip()
        ]
    elif isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = [_split_item(str(part)) for part in overrides]
    out: dict[int, str] = {}
    for rank, spec in items:
        try:
            r = int(str(rank).strip())
        except ValueError:
            raise ConfigError(
                f"comm.link_overrides: {rank!r} is not an agent rank",
                help="write RANK=PROFILE, e.g. comm.link_overrides=3=wan-100",
            ) from None
        if r < 0:
            raise ConfigError(
                f"comm.link_overrides: agent rank must be >= 0, got {r}",
                help="write RANK=PROFILE, e.g. comm.link_overrides=3=wan-100",
            )
        parse_profile(str(spec))  # validate now, at configuration time
        out[r] = str(spec).strip()
    return out


def _split_item(item: str) -> tuple[str, str]:
    rank, sep, spec = item.partition("=")
    if not sep or not spec.strip():
        raise ConfigError(
            f"comm.link_overrides: {item.strip()!r} is not RANK=PROFILE",
            help="write RANK=PROFILE pairs separated by commas, e.g. 1=wan-100,3=edge",
        )
    return rank, spec


@dataclass(frozen=True, slots=True)
class LinkTable:
    """Which link each agent sits behind; :meth:`edge` gives the link between two agents."""

    default: LinkProfile
    """The link of every agent not named in an override."""
    per_rank: tuple[LinkProfile, ...]
    """Rank ``r``'s link is ``per_rank[r]``."""

    @classmethod
    def build(
        cls,
        default: str | LinkProfile,
        overrides: str | Mapping[int | str, str] | Sequence[str] | None,
        *,
        world_size: int,
    ) -> LinkTable:
        """Every rank on ``default``, except the ranks named in ``overrides``.

        Raises:
            ConfigError: a bad profile, or an override naming an agent outside ``0..world_size-1``.
        """
        base = parse_profile(default)
        table = [base] * world_size
        for rank, spec in parse_overrides(overrides).items():
            if rank >= world_size:
                raise ConfigError(
                    f"comm.link_overrides: agent {rank} does not exist "
                    f"(this run has agents 0..{world_size - 1})",
                    help=f"name a rank between 0 and {world_size - 1}, or raise agents",
                )
            table[rank] = parse_profile(spec)
        return cls(base, tuple(table))

    @property
    def world_size(self) -> int:
        return len(self.per_rank)

    @property
    def shaped(self) -> bool:
        """True when any link costs time (otherwise emulation is a no-op)."""
        return any(p.shaped for p in self.per_rank)

    def edge(self, a: int, b: int) -> LinkProfile:
        """The link a message from rank ``a`` to rank ``b`` crosses: the worse of the two."""
        pa, pb = self.per_rank[a], self.per_rank[b]
        if pa == pb:
            return pa
        return LinkProfile(
            name=pa.name if pa.bandwidth_bps <= pb.bandwidth_bps else pb.name,
            bandwidth_bps=min(pa.bandwidth_bps, pb.bandwidth_bps),
            latency_s=max(pa.latency_s, pb.latency_s),
        )

    def restricted(self, ranks: Sequence[int]) -> LinkTable:
        """The links of a group of some agents: its rank ``i`` is this table's ``ranks[i]``.

        Example:
            >>> LinkTable.build("lan", "3=edge", world_size=4).restricted([1, 3]).describe()
            'lan (agent 1: edge)'
        """
        return LinkTable(self.default, tuple(self.per_rank[r] for r in ranks))

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``wan-100 (agent 3: edge)``."""
        extra = [f"agent {r}: {p.name}" for r, p in enumerate(self.per_rank) if p != self.default]
        return self.default.name + (f" ({', '.join(extra)})" if extra else "")
