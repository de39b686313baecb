"""One agent: DiLoCo and streaming DiLoCo at the default outer settings equal the independent
replay in diloco_replay.py (the outer Nesterov step runs, with nothing to send)."""

from __future__ import annotations

import pytest

from ddla.comm import Transport
from ddla.sync.fragments import split_fragments
from tests.sync.diloco_replay import (
    CASES,
    FRAGMENT_TABLES,
    MIX,
    OUTER_LR,
    OUTER_MOMENTUM,
    assert_same_run,
    case_config,
    make_model,
    replay_case,
    run_library,
)


def test_the_replayed_settings_are_the_library_defaults():
    cfg = case_config("streaming_p3_tau2")
    assert (cfg.outer_lr, cfg.outer_momentum, cfg.mix) == (OUTER_LR, OUTER_MOMENTUM, MIX)


@pytest.mark.parametrize("parts", sorted(FRAGMENT_TABLES))
def test_fragment_tables_of_the_replay_are_the_library_split(parts):
    shapes = [tuple(p.shape) for p in make_model().parameters()]
    got = [[(s.index, s.start, s.stop) for s in f] for f in split_fragments(shapes, parts)]
    assert got == FRAGMENT_TABLES[parts]


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_agent_matches_the_replay(name):
    with Transport.single() as transport:
        got = run_library(transport, case_config(name), CASES[name][1])
        assert transport.stats.totals()["bytes_sent"] == 0
    (want,) = replay_case(name, world=1)
    assert_same_run(got, want, name)
