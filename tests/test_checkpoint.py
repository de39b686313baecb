"""Checkpoints: atomic write, commit pointer, corruption and mismatch detection."""

from __future__ import annotations

import pytest

from ddla.checkpoint import (
    commit_checkpoint,
    file_sha256,
    read_agent_state,
    verify_checkpoint,
    write_agent_state,
)
from ddla.errors import CheckpointError


def _write(tmp_path, step: int, world: int) -> list:
    paths = [
        write_agent_state(tmp_path, step=step, rank=r, state={"r": r, "step": step})
        for r in range(world)
    ]
    commit_checkpoint(
        tmp_path,
        step=step,
        world_size=world,
        hashes={r: file_sha256(p) for r, p in enumerate(paths)},
    )
    return paths


def test_latest_wins_and_reads_back(tmp_path) -> None:
    _write(tmp_path, 10, 2)
    _write(tmp_path, 20, 2)
    assert verify_checkpoint(tmp_path, world_size=2)["step"] == 20
    assert read_agent_state(tmp_path, rank=1) == {"r": 1, "step": 20}
    assert not list(tmp_path.rglob("*.tmp"))


def test_uncommitted_step_is_ignored(tmp_path) -> None:
    _write(tmp_path, 10, 1)
    write_agent_state(tmp_path, step=20, rank=0, state={"r": 0, "step": 20})  # crash before commit
    assert read_agent_state(tmp_path, rank=0)["step"] == 10


def test_corrupt_missing_and_mismatched(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        verify_checkpoint(tmp_path)
    paths = _write(tmp_path, 5, 2)
    with pytest.raises(CheckpointError, match="written by 2 agents") as info:
        verify_checkpoint(tmp_path, world_size=3)
    assert "--agents 2" in info.value.help
    data = bytearray(paths[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    paths[1].write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        verify_checkpoint(tmp_path)
    paths[1].unlink()
    with pytest.raises(CheckpointError, match="missing"):
        verify_checkpoint(tmp_path)
    (tmp_path / "checkpoints" / "latest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        verify_checkpoint(tmp_path)
