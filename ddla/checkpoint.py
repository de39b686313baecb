"""Atomic checkpoints of whole agent state, their verification, and fallback on resume.

Layout under the run directory::

    checkpoints/step_00000100/agent0.pt      # one file per agent, written to .tmp then renamed
    checkpoints/step_00000100/manifest.json  # {"run_id", "step", "world_size", "sha256", ...}
    checkpoints/latest.json                  # a copy of the newest committed manifest

A manifest is written last (by rank 0, after every agent's file is in place and hashed), so a
crash mid-save leaves the previous checkpoint as the one a resume uses. A resume checks every
agent file against its recorded SHA-256; when the run has a secret the manifest also carries
an HMAC-SHA-256 (key derived from the secret), so that someone who can write the run
directory cannot swap a file and recompute the hash. Files are read with
``torch.load(weights_only=True)``: tensors and plain Python values only, never code.

When the newest checkpoint is unusable (missing, truncated, corrupt, from another run) the
newest intact older one is used and :attr:`Checkpoint.fallback` says which and why.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> path = write_agent_state(d, step=5, rank=0, state={"x": 1})
    >>> commit_checkpoint(d, step=5, world_size=1, hashes={0: file_sha256(path)}, run_id="r1")
    >>> find_checkpoint(d, run_id="r1").step, read_agent_state(d, rank=0, run_id="r1")["x"]
    (5, 1)
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddla.errors import CheckpointError

log = logging.getLogger("ddla.agent")

LATEST = "latest.json"
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step_(\d{8})$")
_HINT = "resume from a run directory that has checkpoints (train.checkpoint_every > 0)"


def checkpoint_key(secret: bytes) -> bytes:
    """The key that MACs checkpoint manifests, derived from the run secret (HKDF-SHA-256)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=b"ddla/checkpoint/v1").derive(
        secret
    )


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


def _canonical(record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "mac"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _mac(key: bytes, record: dict[str, Any]) -> str:
    return hmac.new(key, _canonical(record), hashlib.sha256).hexdigest()


def write_agent_state(run_dir: Path, *, step: int, rank: int, state: dict[str, Any]) -> Path:
    """Write one agent's state for ``step`` atomically; return the file path.

    ``state`` must hold only tensors and plain Python values (what ``weights_only`` loads).
    """
    d = _step_dir(run_dir, step)
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    path = d / f"agent{rank}.pt"
    _atomic_write_bytes(path, buf.getvalue())
    return path


def commit_checkpoint(
    run_dir: Path,
    *,
    step: int,
    world_size: int,
    hashes: dict[int, str],
    run_id: str,
    fixed: dict[str, Any] | None = None,
    key: bytes | None = None,
) -> None:
    """Commit ``step`` once every agent's file is written (rank 0 only).

    ``fixed`` records the settings a resume may not change (see :mod:`ddla.launch.resume`);
    ``key`` (from :func:`checkpoint_key`) MACs the manifest.
    """
    record: dict[str, Any] = {
        "run_id": run_id,
        "step": step,
        "world_size": world_size,
        "sha256": {str(r): h for r, h in hashes.items()},
        "fixed": fixed or {},
    }
    if key is not None:
        record["mac"] = _mac(key, record)
    data = (json.dumps(record) + "\n").encode()
    _atomic_write_bytes(_step_dir(run_dir, step) / MANIFEST, data)
    _atomic_write_bytes(_ckpt_dir(run_dir) / LATEST, data)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified checkpoint: its manifest, and why a newer one was passed over (if one was)."""

    step: int
    world_size: int
    manifest: dict[str, Any]
    fallback: str | None = None

    def path(self, run_dir: Path, rank: int) -> Path:
        return _step_dir(run_dir, self.step) / f"agent{rank}.pt"


def _check(
    run_dir: Path,
    manifest_path: Path,
    *,
    run_id: str | None,
    key: bytes | None,
    world_size: int | None,
) -> Checkpoint:
    """Verify one manifest and the files it names; raise CheckpointError saying what is wrong."""
    try:
        record = json.loads(manifest_path.read_text())
        step, ws, hashes = int(record["step"]), int(record["world_size"]), record["sha256"]
        if not isinstance(hashes, dict):
            raise TypeError("sha256 is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint index {manifest_path} is corrupt: {exc}") from exc
    if key is not None:
        mac = record.get("mac")
        if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(key, record)):
            raise CheckpointError(
                f"checkpoint index {manifest_path} fails its HMAC (changed without the run "
                "secret, or written under another secret)",
                help="the run directory was modified; resume only from an intact copy",
            )
    if run_id is not None and record.get("run_id") != run_id:
        raise CheckpointError(
            f"checkpoint at step {step} belongs to another run "
            f"(run id {record.get('run_id')!r}, this run is {run_id!r})",
            help="a fresh run starts a fresh checkpoint set; resume the run that wrote it",
        )
    if world_size is not None and ws != world_size:
        raise CheckpointError(
            f"checkpoint at step {step} was written by {ws} agents, this run has {world_size}",
            help=f"resume with --agents {ws}",
        )
    for rank in range(ws):
        path = _step_dir(run_dir, step) / f"agent{rank}.pt"
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is missing", help=_HINT)
        if file_sha256(path) != hashes.get(str(rank)):
            raise CheckpointError(
                f"checkpoint file {path} is corrupt (SHA-256 mismatch)",
                help="the file changed after it was written; resume from an intact copy",
            )
    return Checkpoint(step=step, world_size=ws, manifest=record)


def _candidates(run_dir: Path) -> list[Path]:
    """Manifests to try, newest first: latest.json, then every step directory's own."""
    ckpt = _ckpt_dir(run_dir)
    steps = []
    if ckpt.is_dir():
        for d in ckpt.iterdir():
            m = _STEP_DIR.match(d.name)
            if m and d.is_dir():
                steps.append((int(m.group(1)), d / MANIFEST))
    found = [p for _, p in sorted(steps, reverse=True)]
    return [ckpt / LATEST, *found] if (ckpt / LATEST).is_file() else found


def find_checkpoint(
    run_dir: Path,
    *,
    run_id: str | None = None,
    key: bytes | None = None,
    world_size: int | None = None,
) -> Checkpoint:
    """The newest intact checkpoint of run ``run_id``; say in ``fallback`` what was skipped.

    A settings mismatch (another agent count) is not a reason to fall back: it is raised.
    """
    skipped: list[str] = []
    candidates = _candidates(Path(run_dir))
    if candidates and candidates[0].name != LATEST:
        skipped.append(f"{LATEST} is missing")
    for manifest in candidates:
        if not manifest.is_file():
            skipped.append(f"step {manifest.parent.name[5:].lstrip('0') or 0}: never committed")
            continue
        try:
            found = _check(run_dir, manifest, run_id=run_id, key=key, world_size=None)
        except CheckpointError as exc:
            skipped.append(str(exc))
            continue
        if world_size is not None and found.world_size != world_size:
            _check(run_dir, manifest, run_id=run_id, key=key, world_size=world_size)
        why = "; ".join(skipped)
        return Checkpoint(
            step=found.step,
            world_size=found.world_size,
            manifest=found.manifest,
            fallback=f"resuming from step {found.step}, the newest intact checkpoint ({why})"
            if skipped
            else None,
        )
    if skipped:
        raise CheckpointError(
            f"no intact checkpoint in {run_dir}: {'; '.join(skipped)}",
            help="the checkpoints are damaged or belong to another run; start a fresh run",
        )
    raise CheckpointError(f"no checkpoint in {run_dir} (nothing under checkpoints/)", help=_HINT)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds any committed checkpoint (intact or not)."""
    return any(p.is_file() for p in _candidates(Path(run_dir)))


def load_agent_file(path: Path) -> dict[str, Any]:
    """Load one agent file: tensors and plain values only (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on bad or unsafe bytes
        raise CheckpointError(
            f"cannot load checkpoint file {path}: {str(exc).splitlines()[0]}",
            help="the file is not a ddla checkpoint of this version, or holds code "
            "(only tensors and plain values are loaded)",
        ) from exc


def read_agent_state(
    run_dir: Path,
    *,
    rank: int,
    run_id: str | None = None,
    key: bytes | None = None,
    world_size: int | None = None,
) -> dict[str, Any]:
    """Load this agent's state from the newest intact checkpoint (see :func:`find_checkpoint`)."""
    found = find_checkpoint(run_dir, run_id=run_id, key=key, world_size=world_size)
    state = load_agent_file(found.path(run_dir, rank))
    if state.get("step") not in (None, found.step):
        raise CheckpointError(f"checkpoint file {found.path(run_dir, rank)} is for another step")
    return state


def save_checkpoint(
    out: Path,
    step: int,
    parts: tuple[Any, Any, Any, Any, Any],
    *,
    run_id: str,
    fixed: dict[str, Any],
    key: bytes | None,
) -> None:
    """Write this agent's state for ``step``; rank 0 commits the manifest once all wrote.

    ``parts`` are (model, optimizer, strategy, Transport, AgentTimer); collective.
    """
    model, optimizer, strategy, transport, timer = parts
    # Only tensors and plain values, so a resume can load with weights_only=True.
    state = {
        "run_id": run_id,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "strategy": strategy.state_dict(),
        "comm_stats": transport.stats.state_dict(),
        "timer": timer.state_dict(),
        "rng": torch.get_rng_state(),
    }
    path = write_agent_state(out, step=step, rank=transport.rank, state=state)
    hashes = transport.all_gather_object((transport.rank, file_sha256(path)), tag="control")
    if transport.rank == 0:
        commit_checkpoint(
            out,
            step=step,
            world_size=transport.world_size,
            hashes=dict(hashes),
            run_id=run_id,
            fixed=fixed,
            key=key,
        )
    # Nobody moves on (and possibly dies) before the checkpoint is committed.
    transport.barrier()
    log.info("checkpoint at step %d", step)
