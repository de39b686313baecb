"""Three real gloo agents: DiLoCo and streaming DiLoCo at the default outer settings (lr 0.7,
Nesterov momentum 0.9, mix 0.5) equal the independent single-process replay in
diloco_replay.py, step by step, on every agent (ranks start from different parameters, so the
initial broadcast is checked too)."""

from __future__ import annotations

import pytest

from ddla.comm import Transport
from ddla.testing import run_agents
from tests.sync.diloco_replay import CASES, assert_same_run, case_config, replay_case, run_library

WORLD = 3
#: DiLoCo and streaming DiLoCo with tau > 0 over gloo; the other cases run with one agent.
DIST_CASES = ("diloco", "streaming_p3_tau2")


def _agent(transport: Transport) -> dict[str, object]:
    return {name: run_library(transport, case_config(name), CASES[name][1]) for name in DIST_CASES}


@pytest.mark.dist
@pytest.mark.timeout(600)  # spawning 3 agents takes minutes on a loaded 2-core machine
def test_three_agents_match_the_replay():
    results = run_agents(_agent, WORLD, timeout_s=540)
    for name in DIST_CASES:
        want = replay_case(name, world=WORLD)
        for rank in range(WORLD):
            assert_same_run(results[rank][name], want[rank], f"{name} rank {rank}")
