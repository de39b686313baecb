"""Atomic checkpoints of whole agent state, and their verification on resume.

Layout under the run directory::

    checkpoints/step_00000100/agent0.pt   # one file per agent, written to .tmp then renamed
    checkpoints/latest.json               # {"step", "world_size", "sha256": {rank: hex}}

``latest.json`` is written last (by rank 0, after every agent's file is in place and hashed),
so a crash mid-save leaves the previous checkpoint as the one a resume uses. A resume checks
every agent file against its recorded SHA-256 before anything starts.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> path = write_agent_state(d, step=5, rank=0, state={"x": 1})
    >>> commit_checkpoint(d, step=5, world_size=1, hashes={0: file_sha256(path)})
    >>> verify_checkpoint(d)["step"], read_agent_state(d, rank=0)["x"]
    (5, 1)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from ddla.errors import CheckpointError

LATEST = "latest.json"


def _ckpt_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def _step_dir(run_dir: Path, step: int) -> Path:
    return _ckpt_dir(run_dir) / f"step_{step:08d}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_agent_state(run_dir: Path, *, step: int, rank: int, state: dict[str, Any]) -> Path:
    """Write one agent's state for ``step`` atomically; return the file path."""
    d = _step_dir(run_dir, step)
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    path = d / f"agent{rank}.pt"
    _atomic_write_bytes(path, buf.getvalue())
    return path


def commit_checkpoint(run_dir: Path, *, step: int, world_size: int, hashes: dict[int, str]) -> None:
    """Point ``latest.json`` at ``step`` once every agent's file is written (rank 0 only)."""
    record = {
        "step": step,
        "world_size": world_size,
        "sha256": {str(r): h for r, h in hashes.items()},
    }
    _atomic_write_bytes(_ckpt_dir(run_dir) / LATEST, (json.dumps(record) + "\n").encode())


def verify_checkpoint(run_dir: Path, *, world_size: int | None = None) -> dict[str, Any]:
    """Check the latest checkpoint is complete and uncorrupted; return its record."""
    latest = _ckpt_dir(run_dir) / LATEST
    hint = "resume from a run directory that has checkpoints (train.checkpoint_every > 0)"
    if not latest.is_file():
        raise CheckpointError(f"no checkpoint in {run_dir} ({latest} is missing)", help=hint)
    try:
        record = json.loads(latest.read_text())
        step, ws, hashes = int(record["step"]), int(record["world_size"]), record["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint index {latest} is corrupt: {exc}", help=hint) from exc
    if world_size is not None and ws != world_size:
        raise CheckpointError(
            f"checkpoint in {run_dir} was written by {ws} agents, this run has {world_size}",
            help=f"resume with --agents {ws}",
        )
    for rank in range(ws):
        path = _step_dir(run_dir, step) / f"agent{rank}.pt"
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing", help=hint)
        if file_sha256(path) != hashes.get(str(rank)):
            raise CheckpointError(
                f"checkpoint file {path} is corrupt (SHA-256 mismatch)",
                help="the file changed after it was written; resume from an intact copy",
            )
    return record


def read_agent_state(run_dir: Path, *, rank: int) -> dict[str, Any]:
    """Load this agent's state from the latest verified checkpoint."""
    record = verify_checkpoint(run_dir)
    path = _step_dir(run_dir, int(record["step"])) / f"agent{rank}.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch.load raises many types on bad bytes
        raise CheckpointError(f"cannot load checkpoint file {path}: {exc}") from exc
