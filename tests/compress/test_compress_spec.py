"""Bad compressor specs fail at construction with a clear message and a hint."""

from __future__ import annotations

import pytest

from ddla.compress import build_compressor
from ddla.errors import ConfigError


@pytest.mark.parametrize(
    "spec, match",
    [
        ("", "empty"),
        ("zip", "unknown compressor 'zip'"),
        ("topk", "needs an argument"),
        ("topk:0", "ratio must be in"),
        ("topk:1.5", "ratio must be in"),
        ("topk:abc", "cannot read 'abc'"),
        ("powersgd:0", "rank must be"),
        ("powersgd:1.5", "cannot read"),
        ("int8:3", "block size"),
        ("fp16:2", "takes no argument"),
        ("int8+", "empty"),
        ("int8+topk:0.1", "cannot follow"),
        ("none+int8", "cannot be chained"),
    ],
)
def test_bad_spec_raises_config_error(spec, match):
    with pytest.raises(ConfigError, match=match) as info:
        build_compressor(spec)
    assert info.value.exit_code == 2
    if match in ("empty", "unknown compressor 'zip'", "cannot follow"):
        assert info.value.help
