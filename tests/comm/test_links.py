"""Link profiles, per-agent overrides and their validation."""

from __future__ import annotations

import math

import pytest

from ddla.comm.links import PROFILES, LinkProfile, LinkTable, parse_overrides, parse_profile
from ddla.errors import ConfigError


def test_named_profiles_match_the_issue() -> None:
    assert PROFILES["lan"].bandwidth_bps == math.inf and PROFILES["lan"].latency_s == 0
    assert not PROFILES["lan"].shaped
    assert (PROFILES["dc"].bandwidth_bps, PROFILES["dc"].latency_s) == (10e9, 0.001)
    assert (PROFILES["wan"].bandwidth_bps, PROFILES["wan"].latency_s) == (1e9, 0.025)
    # wan-100: 50 ms round trip, so 25 ms each way.
    assert (PROFILES["wan-100"].bandwidth_bps, PROFILES["wan-100"].latency_s) == (100e6, 0.025)
    assert (PROFILES["edge"].bandwidth_bps, PROFILES["edge"].latency_s) == (20e6, 0.080)
    for name, profile in PROFILES.items():
        assert parse_profile(name) is profile


def test_transfer_time_is_latency_plus_bits_over_bandwidth() -> None:
    assert PROFILES["wan-100"].transfer_s(1_000_000) == pytest.approx(0.025 + 0.08)
    assert PROFILES["lan"].transfer_s(10**9) == 0.0


@pytest.mark.parametrize(
    ("spec", "bw", "lat"),
    [
        ("100mbit:25ms", 100e6, 0.025),
        ("1gbit:5ms", 1e9, 0.005),
        ("  2.5Gbit : 0.5 s ", 2.5e9, 0.5),
        ("8000:0", 8000.0, 0.0),
        ("inf:10us", math.inf, 1e-5),
    ],
)
def test_custom_specs_parse(spec: str, bw: float, lat: float) -> None:
    p = parse_profile(spec)
    assert p.bandwidth_bps == pytest.approx(bw) and p.latency_s == pytest.approx(lat)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("wan-1000", "unknown link profile"),
        ("fast", "unknown link profile"),
        ("-5mbit:25ms", "bandwidth must be > 0"),
        ("0mbit:25ms", "bandwidth must be > 0"),
        ("100mbit:-3ms", "latency must be"),
        ("100parsec:3ms", "unknown unit"),
        ("1.2.3mbit:3ms", "not a number"),
    ],
)
def test_bad_specs_fail_with_help(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_profile(spec)
    assert info.value.help and info.value.exit_code == 2


def test_direct_profile_validation() -> None:
    with pytest.raises(ConfigError, match="bandwidth"):
        LinkProfile(name="x", bandwidth_bps=-1.0, latency_s=0.0)
    with pytest.raises(ConfigError, match="latency"):
        LinkProfile(name="x", bandwidth_bps=1.0, latency_s=-0.1)
    with pytest.raises(ConfigError, match="bandwidth"):
        LinkProfile(name="x", bandwidth_bps=float("nan"), latency_s=0.0)


def test_overrides_parse_in_three_spellings() -> None:
    want = {2: "wan-100", 3: "edge"}
    assert parse_overrides("2=wan-100, 3=edge") == want
    assert parse_overrides(["2=wan-100", "3=edge"]) == want
    assert parse_overrides({"2": "wan-100", 3: "edge"}) == want
    assert parse_overrides("") == {} and parse_overrides(None) == {}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ("2", "is not RANK=PROFILE"),
        ("x=wan", "is not an agent rank"),
        ("-1=wan", "must be >= 0"),
        ("1=moon", "unknown link profile"),
        ({1: "-1mbit:1ms"}, "bandwidth must be > 0"),
    ],
)
def test_bad_overrides_fail_with_help(overrides: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        parse_overrides(overrides)  # type: ignore[arg-type]
    assert info.value.help


def test_override_naming_a_missing_agent() -> None:
    with pytest.raises(ConfigError, match="agent 4 does not exist") as info:
        LinkTable.build("wan", {4: "edge"}, world_size=4)
    assert "0 and 3" in (info.value.help or "")


def test_edges_take_the_worse_of_both_links() -> None:
    table = LinkTable.build("wan", "3=edge", world_size=4)
    assert table.edge(0, 1) == PROFILES["wan"]
    far = table.edge(1, 3)
    assert far.bandwidth_bps == 20e6 and far.latency_s == 0.080
    mixed = LinkTable.build("1gbit:100ms", "1=10mbit:1ms", world_size=2).edge(0, 1)
    assert (mixed.bandwidth_bps, mixed.latency_s) == (10e6, 0.1)
    assert table.describe() == "wan (agent 3: edge)"
    assert LinkTable.build("lan", None, world_size=3).shaped is False
