"""Every bad input: one clear line naming the problem, a help hint, non-zero exit, no traceback,
and nothing half-written that looks complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ddla.cli import app

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(args))
    return result, result.output


def _assert_clean_error(result, output: str, needle: str, code: int) -> None:
    assert result.exit_code == code, output
    assert "Traceback" not in output
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert lines[0].startswith("error:") and needle in lines[0], output
    assert any(ln.startswith("help:") for ln in lines), output


@pytest.mark.parametrize(
    ("args", "needle", "code"),
    [
        (["--strategy", "telepathy"], "unknown strategy 'telepathy'", 2),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'", 2),
        (["--model", "resnet50"], "unknown model 'resnet50'", 2),
        (["--partition", "zipf:1"], "zipf", 2),
        (["--agents", "0"], "agents must be >= 1", 2),
        (["--set", "train.stepz=3"], "unknown setting 'train.stepz'", 2),
    ],
)
def test_bad_config(tmp_path: Path, args: list[str], needle: str, code: int) -> None:
    result, out = _run("run", "--out", str(tmp_path / "run"), *args)
    _assert_clean_error(result, out, needle, code)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_missing_dataset_directory(tmp_path: Path) -> None:
    result, out = _run(
        "run",
        "--dataset",
        "fashion-mnist",
        "--set",
        f"data.root={tmp_path / 'nowhere'}",
        "--out",
        str(tmp_path / "run"),
    )
    _assert_clean_error(result, out, "nowhere", 3)


def test_malformed_data_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip archive")
    result, out = _run("run", "--dataset", f"npz:{bad}", "--out", str(tmp_path / "run"))
    _assert_clean_error(result, out, "bad.npz", 3)


def test_labels_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "neg.npz"
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 100)
    y[7] = -1
    np.savez(path, x=rng.normal(size=(100, 4)).astype("float32"), y=y)
    result, out = _run("run", "--dataset", f"npz:{path}", "--out", str(tmp_path / "run"))
    _assert_clean_error(result, out, "neg.npz", 3)


def test_non_writable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a directory should be: fails even for root
    result, out = _run("run", "--dataset", "digits", "--out", str(blocker / "run"))
    _assert_clean_error(result, out, "not writable", 2)


def test_resume_without_run_and_with_corrupt_checkpoint(tmp_path: Path) -> None:
    result, out = _run("run", "--resume", str(tmp_path))
    _assert_clean_error(result, out, "not a ddla run directory", 2)
    run = tmp_path / "run"
    (run / "checkpoints" / "step_00000010").mkdir(parents=True)
    (run / "config.yaml").write_text("agents: 2\n")
    (run / "checkpoints" / "step_00000010" / "agent0.pt").write_bytes(b"junk")
    (run / "checkpoints" / "latest.json").write_text(
        '{"step": 10, "world_size": 2, "sha256": {"0": "00", "1": "00"}}'
    )
    result, out = _run("run", "--resume", str(run))
    _assert_clean_error(result, out, "corrupt", 5)
    assert not (run / "summary.json").exists()


def test_eval_errors(tmp_path: Path) -> None:
    result, out = _run("eval", str(tmp_path / "missing.safetensors"))
    _assert_clean_error(result, out, "does not exist", 3)


def test_python_m_ddla_agent_is_ddla_run_with_its_error_handling(capsys, tmp_path: Path):
    """``python -m ddla.agent`` (the torchrun entry) is the typer ``run`` command itself."""
    from ddla.agent import main

    assert main(["--strategy", "telepathy", "--out", str(tmp_path / "r")]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert lines[0] == "error: sync.strategy: unknown strategy 'telepathy'", lines
    assert lines[1].startswith("help: choose one of: allreduce"), lines
    assert main(["--no-such-flag"]) == 2  # click's usage error, as `ddla run` gives
    assert "python -m ddla.agent" in capsys.readouterr().err
