"""What a resumed run may change: checked against the checkpoint before anything is written.

A checkpoint holds optimizer, strategy and compressor state shaped by the settings it was
written under; continuing it under another strategy, model, split or agent count either
crashes deep inside an agent or silently trains something else. The settings listed in
:data:`FIXED_ON_RESUME` are recorded in every checkpoint manifest
(:func:`ddla.checkpoint.commit_checkpoint`) and a resume that changes one is refused in one
line naming the field. Everything else (``train.steps``, evaluation and checkpoint cadence,
timeouts, links) may change.

Example:
    >>> from ddla.config import RunConfig
    >>> fixed = fixed_settings(RunConfig.load(None, ["sync.strategy=allreduce"]))
    >>> fixed["sync.strategy"], "train.steps" in fixed
    ('allreduce', False)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddla.checkpoint import Checkpoint
from ddla.config import RunConfig
from ddla.errors import ConfigError

#: Settings a resume must keep (dotted paths into RunConfig).
FIXED_ON_RESUME = (
    "agents",
    "data.dataset",
    "data.size",
    "data.partition",
    "data.batch_size",
    "data.share",
    "data.pull_every",
    "data.pull_count",
    "model.name",
    "model.hidden",
    "model.channels",
    "optim.name",
    "train.seed",
    "sync.strategy",
    "sync.every",
    "sync.compress",
    "sync.quantized_reduce",
    "sync.fragments",
    "sync.overlap",
    "security.enabled",
    "security.secure_aggregation",
)


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def fixed_settings(cfg: RunConfig) -> dict[str, Any]:
    """The values of :data:`FIXED_ON_RESUME` in ``cfg`` (plain JSON values)."""
    return {name: _get(cfg, name) for name in FIXED_ON_RESUME}


def check_resume(cfg: RunConfig, checkpoint: Checkpoint, out: Path) -> None:
    """Refuse (ConfigError naming the field) a resume whose settings differ from its checkpoint."""
    recorded = checkpoint.manifest.get("fixed") or {}
    for name, value in fixed_settings(cfg).items():
        if name in recorded and recorded[name] != value:
            raise ConfigError(
                f"--resume {out}: {name} is {recorded[name]!r} in the checkpoint at step "
                f"{checkpoint.step}, not {value!r}",
                help=f"a resumed run keeps {name}; drop that override, or start a fresh run "
                "with another --out",
            )
