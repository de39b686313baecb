"""A peer that stops answering mid-training is named, with the op and the timeout (issue 10,
item 11). It used to read ``agent 0: RuntimeError: ... Timed out waiting 20000ms for recv``."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_helpers import FAST

import ddla
from ddla.errors import CommTimeoutError
from ddla.testing import FaultInjector

# slow: the survivors wait out the 15 s timeout, then the launcher must kill the frozen agent;
# tests/comm/test_heartbeat.py is the fast case of the same behaviour.
pytestmark = [pytest.mark.e2e, pytest.mark.dist, pytest.mark.slow]


def test_a_stopped_agent_is_named_with_the_op_and_the_timeout(
    tmp_path: Path, no_leftover_processes
) -> None:
    out = tmp_path / "run"
    faults = FaultInjector().stop(rank=1, at_step=3)  # SIGSTOP: alive, silent
    with pytest.raises(CommTimeoutError) as info:
        ddla.launch(
            overrides=[*FAST, "train.steps=40", f"out={out}", "comm.timeout_s=15"],
            faults=faults,
            progress=False,
        )
    text = str(info.value)
    assert text.startswith("agent 1 stopped answering"), text
    assert "all_reduce" in text and "timed out after 15 s" in text
    assert "agent 1" in info.value.help
    assert not (out / "summary.json").exists()
