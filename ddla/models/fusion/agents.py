"""Each agent's own final model (``train.keep_agent_models=true``): ``OUT/agents/agentN``.

Example:
    >>> agent_model_path("runs/a", 3).as_posix()
    'runs/a/agents/agent3.safetensors'
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ddla.data.preprocess.transform import Transform
    from ddla.job import Job

AGENTS_DIR = "agents"


def agent_model_path(out: str | Path, rank: int) -> Path:
    return Path(out) / AGENTS_DIR / f"agent{rank}.safetensors"


def save_agent_model(
    out: str | Path,
    rank: int,
    model: torch.nn.Module,
    job: Job,
    *,
    transform: Transform | None = None,
    samples: int | None = None,
) -> Path:
    """Write this agent's model (with the run's transform) where ``ddla merge RUN_DIR`` looks."""
    from ddla.models import save_model

    path = agent_model_path(out, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra: dict[str, object] = {"agent": rank, "task": job.task}
    if samples is not None:
        extra["samples"] = samples
    return save_model(
        path,
        model,
        model_config=job.model_config,
        input_shape=job.input_shape,
        classes=tuple(job.classes or ()),
        dataset=job.name,
        extra=extra,
        preprocess=transform,
    )
