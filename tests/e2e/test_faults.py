"""``ddla run`` survives a killed agent and restarts it: the restarted agent rejoins by
pulling the state from a live peer, and every agent ends with the same model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import ddla
from tests.e2e.e2e_helpers import FAST

pytestmark = [pytest.mark.e2e, pytest.mark.dist]

# Emulated links make each synchronization take real time (about a second), so the restarted
# agent is back before the run ends.
SURVIVE = [
    *FAST, "agents=3", "sync.strategy=diloco", "sync.every=10", "train.steps=200",
    "train.eval_every=50", "comm.link=2mbit:100ms", "comm.timeout_s=30",
]  # fmt: skip


def _final_hashes(out: Path) -> dict[int, str]:
    found = {}
    for rank in range(3):
        lines = re.findall(
            r"final model sha256 (\w+)", (out / "logs" / f"agent{rank}.log").read_text()
        )
        if lines:
            found[rank] = lines[-1]
    return found


@pytest.mark.slow  # 2-5 min on a loaded machine; fast case: tests/comm/test_elastic_dist.py
@pytest.mark.timeout(900)
def test_a_killed_agent_is_restarted_and_rejoins(tmp_path: Path, no_leftover_processes) -> None:
    out = tmp_path / "run"
    summary = ddla.launch(
        # The survivors hold a sync up to 50 s for the restarted agent, so it is back in time
        # however slowly it starts on a busy machine.
        overrides=[
            *SURVIVE,
            f"out={out}",
            "fault.kill=1@15",
            "fault.max_restarts=1",
            "comm.timeout_s=60",
            "fault.rejoin_wait_s=50",
        ],
        progress=False,
    )
    summary = json.loads((out / "summary.json").read_text())
    kinds = [(e["agent"], e["kind"]) for e in summary["faults"]]
    assert kinds == [(1, "killed"), (1, "rejoined")], summary["faults"]
    killed, rejoined = summary["faults"]
    assert killed["step"] == 20 and killed["agents_after"] == [0, 2]
    # admitted at the sync that noticed the loss or a later one
    assert rejoined["step"] >= killed["step"] and rejoined["agents_after"] == [0, 1, 2]
    assert summary["members"]["end"] == [0, 1, 2]
    hashes = _final_hashes(out)
    assert sorted(hashes) == [0, 1, 2] and len(set(hashes.values())) == 1, hashes


@pytest.mark.slow  # two restarts; fast case: tests/launch/test_supervise_stranded.py
@pytest.mark.timeout(900)
def test_a_run_whose_agents_are_all_lost_before_a_rejoin_fails_in_one_line(
    tmp_path: Path, no_leftover_processes
) -> None:
    # Agent 1 dies at step 15 and is restarted; agent 0, alone since the sync at step 20,
    # dies at step 25, before agent 1's new process asked to be admitted (it is still
    # starting): only restarted agents are left, none holds the model. Without the check
    # each would wait fault.rejoin_timeout_s (600 s) and be restarted to wait again.
    out = tmp_path / "run"
    with pytest.raises(ddla.DdlaError, match="nobody holds the current model") as caught:
        ddla.launch(
            overrides=[*FAST, "agents=2", "sync.strategy=diloco", "sync.every=10",
                       "train.steps=200", "comm.timeout_s=30", f"out={out}",
                       "fault.kill=1@15,0@25", "fault.max_restarts=3"],
            progress=False,
        )  # fmt: skip
    assert "before the restarted agent(s) 0, 1 could rejoin" in str(caught.value)
    assert not (out / "summary.json").exists()


def test_without_restarts_the_survivors_finish(tmp_path: Path, no_leftover_processes) -> None:
    out = tmp_path / "run"
    ddla.launch(overrides=[*SURVIVE, f"out={out}", "fault.kill=0@15"], progress=False)
    summary = json.loads((out / "summary.json").read_text())
    (event,) = summary["faults"]
    assert (event["agent"], event["step"], event["kind"]) == (0, 20, "killed")
    assert summary["members"]["end"] == [1, 2]
    hashes = _final_hashes(out)
    assert sorted(hashes) == [1, 2] and len(set(hashes.values())) == 1, hashes


@pytest.mark.slow  # two runs and a restart of every agent: about two minutes here
def test_allreduce_restarts_every_agent_from_the_last_checkpoint(
    tmp_path: Path, no_leftover_processes
) -> None:
    base = [*FAST, "sync.strategy=allreduce", "train.steps=60", "train.checkpoint_every=20",
            "comm.timeout_s=30"]  # fmt: skip
    whole = ddla.launch(overrides=[*base, f"out={tmp_path / 'a'}"], progress=False)
    out = tmp_path / "b"
    restarted = ddla.launch(
        overrides=[*base, f"out={out}", "fault.kill=1@30", "fault.max_restarts=1"],
        progress=False,
    )
    # killed at step 30, every agent restarted from the checkpoint of step 20: the same run
    assert "resumed at step 20" in (out / "logs" / "agent0.log").read_text()
    assert restarted["final"] == whole["final"]
