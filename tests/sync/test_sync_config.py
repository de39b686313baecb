"""SyncConfig: every strategy name resolves, DiLoCo fields validate with clear errors."""

from __future__ import annotations

import pytest

from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.sync import STRATEGIES, SyncConfig


def test_every_registered_strategy_builds_a_config():
    assert set(STRATEGIES) >= {"allreduce", "local_sgd", "diloco", "streaming_diloco"}
    for name, cls in STRATEGIES.items():
        assert cls.name == name
        assert SyncConfig(strategy=name).strategy == name


def test_cli_style_overrides_reach_the_sync_config():
    cfg = RunConfig.load(
        None,
        [
            "sync.strategy=streaming_diloco",
            "sync.every=100",
            "sync.compress=topk:0.01+int8",
            "sync.fragments=4",
            "sync.overlap=5",
            "sync.outer_lr=0.5",
        ],
    )
    s = cfg.sync
    assert (s.strategy, s.every, s.compress, s.fragments, s.overlap, s.outer_lr) == (
        "streaming_diloco",
        100,
        "topk:0.01+int8",
        4,
        5,
        0.5,
    )
    assert (s.outer_momentum, s.mix, s.quantized_reduce) == (0.9, 0.5, "scatter")
    gather = RunConfig.load(None, ["sync.compress=int8", "sync.quantized_reduce=gather"])
    assert gather.sync.quantized_reduce == "gather"


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"compress": "zip"}, "sync.compress: unknown compressor 'zip'"),
        ({"compress": "topk"}, "sync.compress: compressor 'topk' needs an argument"),
        ({"outer_lr": 0.0}, "sync.outer_lr must be > 0"),
        ({"outer_momentum": 1.0}, r"sync.outer_momentum must be in \[0, 1\)"),
        ({"fragments": 0}, "sync.fragments must be >= 1"),
        ({"every": 10, "overlap": 10}, r"sync.overlap must be in \[0, sync.every\)"),
        ({"overlap": -1}, "sync.overlap"),
        ({"mix": 1.0}, r"sync.mix must be in \[0, 1\)"),
        ({"quantized_reduce": "ring"}, "sync.quantized_reduce: unknown scheme 'ring'"),
    ],
)
def test_bad_sync_fields_raise_config_error(fields, match):
    with pytest.raises(ConfigError, match=match):
        SyncConfig(strategy="streaming_diloco", **fields)


def test_bad_compress_error_keeps_the_hint():
    with pytest.raises(ConfigError) as info:
        RunConfig.load(None, ["sync.compress=zip"])
    assert "int8" in (info.value.help or "")
