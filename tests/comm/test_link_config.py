"""comm.link / comm.link_overrides / comm.clock validation in CommConfig."""

from __future__ import annotations

import pytest

from ddla.comm.config import CommConfig
from ddla.errors import ConfigError


def test_defaults_and_normalisation() -> None:
    cfg = CommConfig()
    assert (cfg.link, cfg.link_overrides, cfg.clock) == ("lan", "", "real")
    cfg = CommConfig(link="wan-100", link_overrides=" 3=edge, 1=1gbit:2ms", clock="virtual")
    assert cfg.link_overrides == "3=edge,1=1gbit:2ms"
    cfg.check_agents(4)
    assert cfg.link_table(4).describe() == "wan-100 (agent 1: 1gbit:2ms, agent 3: edge)"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"link": "wan-1000"}, "unknown link profile 'wan-1000'"),
        ({"link": "-10mbit:5ms"}, "bandwidth must be > 0"),
        ({"link": "10mbit:-5ms"}, "latency must be"),
        ({"link_overrides": "2=nowhere"}, "unknown link profile 'nowhere'"),
        ({"clock": "sundial"}, "comm.clock: unknown clock 'sundial'"),
    ],
)
def test_bad_values_fail_at_construction(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        CommConfig(**kwargs)
    assert info.value.help


def test_override_of_missing_agent() -> None:
    cfg = CommConfig(link="wan", link_overrides="7=edge")
    with pytest.raises(ConfigError, match="agent 7 does not exist"):
        cfg.check_agents(4)
