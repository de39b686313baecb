"""What ``ddla merge`` fuses: run directories or model files, loaded and checked alike.

A run directory contributes its agents' own models (``agents/agentN.safetensors``, written with
``train.keep_agent_models=true``) when it has them, else its global ``model.safetensors``; a
``.safetensors`` path is one model. All must share one architecture — the same tensor names,
shapes and dtypes, checked in order so the refusal names the first tensor that differs — and
one preprocessing transform (a parameter average of models fed different inputs means nothing).

Example (the check alone):
    >>> import torch
    >>> first_mismatch({"w": torch.zeros(2)}, {"w": torch.zeros(3)})
    'w: shape (2,) vs (3,)'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddla.data.preprocess.transform import Transform
from ddla.errors import DataError
from ddla.models.export import load_model, load_preprocess
from ddla.models.fusion.agents import AGENTS_DIR


@dataclass(kw_only=True)
class Member:
    """One loaded model: where it came from, its module, metadata and transform."""

    name: str
    path: Path
    module: torch.nn.Module
    meta: dict[str, Any]
    transform: Transform | None

    @property
    def state(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()


def model_paths(inputs: list[str | Path]) -> list[Path]:
    """The model files behind ``inputs`` (run directories expand to their agents' models)."""
    paths: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = (p / AGENTS_DIR).glob("agent*.safetensors")
            numbered = [q for q in found if q.stem.removeprefix("agent").isdigit()]
            agents = sorted(numbered, key=lambda q: int(q.stem.removeprefix("agent")))
            if agents:
                paths.extend(agents)
            elif (p / "model.safetensors").is_file():
                paths.append(p / "model.safetensors")
            else:
                raise DataError(
                    f"{p} holds no model (no agents/agentN.safetensors, no model.safetensors)",
                    help="pass a finished run directory or a model.safetensors file",
                )
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(f"{p} does not exist", help="pass run directories or model files")
    return paths


def _label(path: Path) -> str:
    parts = path.parts
    if len(parts) >= 3 and parts[-2] == AGENTS_DIR:
        return f"{parts[-3]}/{path.stem}"
    return str(path.parent / path.stem) if path.stem == "model" else str(path)


def first_mismatch(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str | None:
    """The first tensor (in ``a``'s order, then ``b``'s extras) that differs in name, shape or
    dtype, described; None when the two state dicts are compatible."""
    for key, t in a.items():
        if key not in b:
            return f"{key}: missing from the second"
        if tuple(t.shape) != tuple(b[key].shape):
            return f"{key}: shape {tuple(t.shape)} vs {tuple(b[key].shape)}"
        if t.dtype != b[key].dtype:
            return f"{key}: dtype {t.dtype} vs {b[key].dtype}"
    for key in b:
        if key not in a:
            return f"{key}: only in the second"
    return None


def load_members(inputs: list[str | Path]) -> list[Member]:
    """Load every model behind ``inputs`` and refuse an incompatible set (DataError)."""
    members = []
    for path in model_paths(inputs):
        module, meta = load_model(path)
        if meta.get("ensemble"):
            raise DataError(
                f"{path} is an ensemble model; merge its source runs instead",
                help="pass the run directories or model files it was built from",
            )
        module.eval()
        members.append(
            Member(
                name=_label(path),
                path=path,
                module=module,
                meta=meta,
                transform=load_preprocess(path, meta),
            )
        )
    if len(members) < 2:
        raise DataError(
            f"ddla merge needs at least 2 models, found {len(members)}",
            help="pass two or more runs (or one run with train.keep_agent_models=true)",
        )
    first = members[0]
    for other in members[1:]:
        why = first_mismatch(first.state, other.state)
        if why is not None:
            raise DataError(
                f"cannot merge {other.name} with {first.name}: tensor {why}",
                help="merge models of one architecture (same model.* settings and dataset)",
            )
        if list(first.meta.get("classes", [])) != list(other.meta.get("classes", [])):
            raise DataError(
                f"cannot merge {other.name} with {first.name}: different class lists",
                help="merge models trained on the same label space",
            )
        same = (first.transform is None and other.transform is None) or (
            first.transform is not None
            and other.transform is not None
            and first.transform.equal(other.transform)
        )
        if not same:
            raise DataError(
                f"cannot merge {other.name} with {first.name}: different preprocessing "
                "transforms (data.preprocess)",
                help="merge models fitted on the same data.preprocess statistics (one run's "
                "agents, or runs with the same data and preprocess)",
            )
    return members
