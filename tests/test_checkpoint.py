"""Checkpoints: atomic write, commit pointer, corruption and mismatch detection, safe loading,
HMAC'd manifests and fallback to the newest intact checkpoint."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from ddla.checkpoint import (
    checkpoint_key,
    commit_checkpoint,
    file_sha256,
    find_checkpoint,
    read_agent_state,
    write_agent_state,
)
from ddla.errors import CheckpointError

RUN = "run-a"


def _write(tmp_path, step: int, world: int, *, key: bytes | None = None, run_id=RUN) -> list:
    paths = [
        write_agent_state(tmp_path, step=step, rank=r, state={"r": r, "step": step})
        for r in range(world)
    ]
    commit_checkpoint(
        tmp_path,
        step=step,
        world_size=world,
        hashes={r: file_sha256(p) for r, p in enumerate(paths)},
        run_id=run_id,
        key=key,
    )
    return paths


def test_latest_wins_and_reads_back(tmp_path) -> None:
    _write(tmp_path, 10, 2)
    _write(tmp_path, 20, 2)
    found = find_checkpoint(tmp_path, run_id=RUN, world_size=2)
    assert found.step == 20 and found.fallback is None
    assert read_agent_state(tmp_path, rank=1, run_id=RUN) == {"r": 1, "step": 20}
    assert not list(tmp_path.rglob("*.tmp"))


def test_uncommitted_step_is_ignored(tmp_path) -> None:
    _write(tmp_path, 10, 1)
    write_agent_state(tmp_path, step=20, rank=0, state={"r": 0, "step": 20})  # crash before commit
    assert read_agent_state(tmp_path, rank=0, run_id=RUN)["step"] == 10


def test_corrupt_missing_and_mismatched(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        find_checkpoint(tmp_path)
    paths = _write(tmp_path, 5, 2)
    with pytest.raises(CheckpointError, match="written by 2 agents") as info:
        find_checkpoint(tmp_path, world_size=3)
    assert "--agents 2" in info.value.help
    data = bytearray(paths[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    paths[1].write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        find_checkpoint(tmp_path)
    paths[1].unlink()
    with pytest.raises(CheckpointError, match="missing"):
        find_checkpoint(tmp_path)
    (tmp_path / "checkpoints" / "latest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        find_checkpoint(tmp_path)


class _Payload:
    """Unpickling this runs code: what an attacker who can write the run directory plants."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_not_executed(tmp_path) -> None:
    # Issue 10 item 5: torch.load(weights_only=False) ran this payload on --resume.
    marker = tmp_path / "pwned"
    paths = _write(tmp_path, 10, 1)
    paths[0].write_bytes(pickle.dumps({"step": 10, "model": _Payload(str(marker))}))
    commit_checkpoint(  # the attacker recomputes the (unkeyed) hash
        tmp_path, step=10, world_size=1, hashes={0: file_sha256(paths[0])}, run_id=RUN
    )
    with pytest.raises(CheckpointError, match="cannot load checkpoint file"):
        read_agent_state(tmp_path, rank=0, run_id=RUN)
    assert not marker.exists()


def test_with_a_secret_a_rewritten_file_and_hash_fail_the_manifest_mac(tmp_path) -> None:
    key = checkpoint_key(b"k" * 32)
    paths = _write(tmp_path, 10, 1, key=key)
    assert find_checkpoint(tmp_path, run_id=RUN, key=key).step == 10
    torch.save({"r": 0, "step": 10, "evil": torch.ones(1)}, paths[0])
    manifest = tmp_path / "checkpoints" / "latest.json"
    record = json.loads(manifest.read_text())
    record["sha256"]["0"] = file_sha256(paths[0])  # recomputed, but the MAC is now wrong
    for p in (manifest, tmp_path / "checkpoints" / "step_00000010" / "manifest.json"):
        p.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="fails its HMAC"):
        find_checkpoint(tmp_path, run_id=RUN, key=key)
    # A manifest without any MAC is refused too when the run has a secret.
    _write(tmp_path, 20, 1, key=None)
    with pytest.raises(CheckpointError, match="fails its HMAC"):
        find_checkpoint(tmp_path, run_id=RUN, key=key)


def test_weights_only_round_trip_of_real_agent_state(tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": torch.get_rng_state(),
    }
    path = write_agent_state(tmp_path, step=1, rank=0, state={"step": 1, **state})
    loaded = torch.load(path, weights_only=True)
    torch.testing.assert_close(loaded["model"]["weight"], model.weight.detach())
    assert loaded["optimizer"]["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def test_falls_back_to_the_newest_intact_checkpoint_and_says_why(tmp_path) -> None:
    # Issue 10 item 6: a truncated newest checkpoint used to stop the resume.
    _write(tmp_path, 10, 2)
    _write(tmp_path, 20, 2)
    newest = _write(tmp_path, 30, 2)
    newest[1].write_bytes(newest[1].read_bytes()[:10])  # truncated
    found = find_checkpoint(tmp_path, run_id=RUN, world_size=2)
    assert found.step == 20
    assert "resuming from step 20" in found.fallback and "agent1.pt is corrupt" in found.fallback
    assert read_agent_state(tmp_path, rank=1, run_id=RUN) == {"r": 1, "step": 20}


def test_without_latest_json_intact_step_directories_are_used(tmp_path) -> None:
    _write(tmp_path, 10, 1)
    _write(tmp_path, 20, 1)
    (tmp_path / "checkpoints" / "latest.json").unlink()
    found = find_checkpoint(tmp_path, run_id=RUN)
    assert found.step == 20 and "latest.json is missing" in found.fallback


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path) -> None:
    # Issue 10 item 2: checkpoints are tied to the run id written at the start.
    _write(tmp_path, 10, 1, run_id="old-run")
    with pytest.raises(CheckpointError, match="belongs to another run"):
        find_checkpoint(tmp_path, run_id="new-run")
    with pytest.raises(CheckpointError, match="belongs to another run"):
        read_agent_state(tmp_path, rank=0, run_id="new-run")
