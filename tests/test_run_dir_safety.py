"""A run never loses or mixes up another run's results (issue 10, items 1-4 and 7).

Failures are checked without starting agents where the refusal comes first; one real run
(two gloo agents on digits, with checkpoints) backs the resume checks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from rundir_factory import write_run_dir

import ddla
from ddla.config import RunConfig
from ddla.errors import CheckpointError, ConfigError, DataError
from ddla.launch.local import interrupt_help

FAST = ["agents=2", "data.dataset=digits", "model.hidden=32", "train.eval_every=0"]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_a_failing_run_leaves_a_finished_run_untouched(tmp_path: Path) -> None:
    # Item 1: the old code deleted summary/model/metrics before the data was checked.
    out = write_run_dir(tmp_path / "run")
    (out / "model.safetensors").write_bytes(b"weights")
    before = _snapshot(out)
    bad = tmp_path / "strings.npz"
    np.savez(bad, x=np.zeros((20, 3)), y=np.array(["a"] * 20))
    with pytest.raises(DataError, match="non-numeric"):
        ddla.launch(overrides=[f"data.dataset=npz:{bad}", f"out={out}"], force=True)
    assert _snapshot(out) == before
    assert not list(tmp_path.glob("run.previous-*"))


def test_a_finished_run_is_refused_without_force(tmp_path: Path) -> None:
    out = write_run_dir(tmp_path / "run")
    before = _snapshot(out)
    with pytest.raises(ConfigError, match="already holds a finished run") as info:
        ddla.launch(overrides=[*FAST, "train.steps=2", f"out={out}"])
    assert "--force" in info.value.help
    assert _snapshot(out) == before


def test_a_folder_of_user_files_is_refused(tmp_path: Path) -> None:
    # Item 3: same-named files (config.yaml, summary.json) were overwritten without a word.
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my thesis")
    (out / "data.csv").write_text("1,2\n")
    with pytest.raises(ConfigError, match="not empty and is not a ddla run directory"):
        ddla.launch(overrides=[*FAST, "train.steps=2", f"out={out}"])
    assert sorted(p.name for p in out.iterdir()) == ["data.csv", "notes.txt"]


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory) -> Path:
    """A finished 2-agent run with checkpoints at steps 4 and 8."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    ddla.launch(
        overrides=[*FAST, "train.steps=8", "train.checkpoint_every=4", f"out={out}"],
        progress=False,
    )
    return out


def test_force_moves_a_finished_run_aside_in_one_rename(tmp_path: Path) -> None:
    from ddla.runfiles import plan_fresh_out, start_fresh_run

    out = write_run_dir(tmp_path / "run")
    (out / "checkpoints" / "step_00000010").mkdir(parents=True)
    before = _snapshot(out)
    plan = plan_fresh_out(out, force=True, scratch=False)
    assert _snapshot(out) == before  # planning changes nothing
    run_id = start_fresh_run(plan, "agents: 2\n")
    [aside] = tmp_path.glob("run.previous-*")
    assert _snapshot(aside) == before  # everything kept, nothing deleted
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "logs", "run.json"]
    assert json.loads((out / "run.json").read_text())["run_id"] == run_id


def test_the_default_out_keeps_the_previous_run_aside(tmp_path: Path) -> None:
    from ddla.runfiles import plan_fresh_out

    out = write_run_dir(tmp_path / "latest")
    assert plan_fresh_out(out, force=False, scratch=True).move_aside


@pytest.mark.e2e
@pytest.mark.slow
def test_force_moves_the_old_run_aside_and_starts_a_fresh_checkpoint_set(
    checkpointed: Path, tmp_path: Path
) -> None:
    # Item 2: a new run left the old run's checkpoints for a later --resume to pick up.
    out = tmp_path / "run"
    out.mkdir()
    for p in checkpointed.rglob("*"):
        if p.is_file():
            dst = out / p.relative_to(checkpointed)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(p.read_bytes())
    old_id = json.loads((out / "run.json").read_text())["run_id"]
    summary = ddla.launch(
        overrides=[*FAST, "train.steps=3", "train.seed=1", f"out={out}"], force=True, progress=False
    )
    [aside] = tmp_path.glob("run.previous-*")
    assert json.loads((aside / "run.json").read_text())["run_id"] == old_id
    assert (aside / "checkpoints" / "latest.json").is_file()  # kept, never deleted
    assert not (out / "checkpoints").exists()  # the new run owns a fresh (empty) set
    assert summary["run_id"] != old_id and summary["steps"] == 3
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ddla.launch(resume=out, overrides=["train.steps=6"], progress=False)


@pytest.mark.e2e
def test_resume_refuses_a_checkpoint_of_another_run(checkpointed: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    for p in checkpointed.rglob("*"):
        if p.is_file():
            dst = out / p.relative_to(checkpointed)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(p.read_bytes())
    (out / "run.json").write_text(json.dumps({"run_id": "someone-else"}))
    with pytest.raises(CheckpointError, match="belongs to another run"):
        ddla.launch(resume=out, overrides=["train.steps=12"], progress=False)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("sync.strategy=diloco", "sync.strategy"),
        ("model.hidden=64", "model.hidden"),
        ("data.partition=dirichlet:0.5", "data.partition"),
    ],
)
def test_resume_with_an_incompatible_override_is_refused_before_writing(
    checkpointed: Path, override: str, field: str
) -> None:
    # Item 4: a changed strategy failed with KeyError: 'momentum' and rewrote config.yaml.
    before = _snapshot(checkpointed)
    with pytest.raises(ConfigError, match=field) as info:
        ddla.launch(resume=checkpointed, overrides=[override, "train.steps=12"], progress=False)
    assert "in the checkpoint at step 8" in str(info.value)
    assert _snapshot(checkpointed) == before


@pytest.mark.e2e
def test_resume_with_another_agent_count_names_it(checkpointed: Path) -> None:
    before = _snapshot(checkpointed)
    with pytest.raises(CheckpointError, match="written by 2 agents"):
        ddla.launch(resume=checkpointed, overrides=["agents=3"], progress=False)
    assert _snapshot(checkpointed) == before


@pytest.mark.e2e
def test_cli_resume_with_another_agent_count_is_one_line(checkpointed: Path) -> None:
    from typer.testing import CliRunner

    from ddla.cli import app

    before = _snapshot(checkpointed)
    result = CliRunner().invoke(
        app, ["run", "--resume", str(checkpointed), "--agents", "3", "--no-progress"]
    )
    assert result.exit_code == CheckpointError.exit_code, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "written by 2 agents" in errors[0], result.output
    assert "Traceback" not in result.output
    assert _snapshot(checkpointed) == before  # nothing resumed, nothing moved aside


@pytest.mark.e2e
@pytest.mark.slow
def test_resume_falls_back_past_a_truncated_newest_checkpoint(
    checkpointed: Path, tmp_path: Path, capfd
) -> None:
    # Item 6, end to end: the newest checkpoint is truncated; the run resumes from step 4.
    out = tmp_path / "run"
    for p in checkpointed.rglob("*"):
        if p.is_file():
            dst = out / p.relative_to(checkpointed)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(p.read_bytes())
    newest = out / "checkpoints" / "step_00000008" / "agent1.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    summary = ddla.launch(resume=out, overrides=["train.steps=8"], progress=False)
    err = capfd.readouterr().err
    assert "resuming from step 4, the newest intact checkpoint" in err
    assert "agent1.pt is corrupt" in err
    whole = json.loads((checkpointed / "summary.json").read_text())
    assert summary["final"] == whole["final"]  # steps 5..8 redone: the same model


def test_interrupt_before_the_first_checkpoint_says_there_is_nothing_to_resume(
    tmp_path: Path,
) -> None:
    # Item 7: it said "continue with: ddla run --resume DIR", which then failed.
    cfg = RunConfig.load(None, ["train.checkpoint_every=100"])
    assert "nothing to resume" in interrupt_help(cfg, tmp_path)
    assert "--resume" not in interrupt_help(cfg, tmp_path)
    cfg0 = RunConfig.load(None, [])
    assert "nothing to resume" in interrupt_help(cfg0, tmp_path)


def test_interrupt_after_a_checkpoint_offers_the_resume(checkpointed: Path) -> None:
    cfg = RunConfig.load(None, ["train.checkpoint_every=4"])
    assert interrupt_help(cfg, checkpointed) == f"continue with: ddla run --resume {checkpointed}"
