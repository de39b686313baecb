"""Save and load the merged global model: ``model.safetensors`` plus ``model.json``.

``model.json`` holds what is needed to rebuild the module (architecture config, input shape,
classes) and where it came from (dataset), so ``ddla eval`` needs nothing else.

Example:
    >>> import tempfile, pathlib
    >>> from ddla.models import ModelConfig, build_model, save_model, load_model
    >>> m = build_model(ModelConfig(name="mlp", hidden=8), input_shape=(4,), num_classes=3)
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> cfg = ModelConfig(name="mlp", hidden=8)
    >>> path = save_model(d / "model.safetensors", m, model_config=cfg,
    ...                   input_shape=(4,), classes=("a", "b", "c"), dataset="toy")
    >>> load_model(path)[1]["classes"]
    ['a', 'b', 'c']
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ddla.errors import ConfigError, DataError
from ddla.models.config import ModelConfig
from ddla.models.zoo import build_model

if TYPE_CHECKING:
    from ddla.data.preprocess.transform import Transform


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_model(
    path: str | Path,
    model: torch.nn.Module,
    *,
    model_config: ModelConfig | None,
    input_shape: tuple[int, ...],
    classes: tuple[str, ...] | list[str],
    dataset: str,
    extra: dict[str, Any] | None = None,
    preprocess: Transform | None = None,
) -> Path:
    """Write ``path`` (safetensors) and its ``.json`` sidecar atomically; return ``path``.

    ``model_config`` is None for a user's own module: the weights are saved, and ``load_model``
    then needs the module passed in. A ``preprocess`` transform (``data.preprocess``) is
    written next to it as ``<stem>.preprocess.safetensors`` and named in the ``.json``
    (``input_shape`` is then the transform's output, the model's input).
    """
    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp))
    meta = {
        "architecture": asdict(model_config) if model_config is not None else "custom",
        "input_shape": list(input_shape),
        "classes": list(classes),
        "num_classes": len(classes),
        "dataset": dataset,
        **(extra or {}),
    }
    if preprocess is not None:
        side = preprocess.save(path.with_name(path.stem + ".preprocess.safetensors"))
        meta["preprocess"] = {**preprocess.describe(), "file": side.name}
    _atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def load_model(
    path: str | Path, module: torch.nn.Module | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a saved model and its metadata; rebuild the architecture from ``model.json``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"model file {path} does not exist", help="pass the model.safetensors of a run"
        )
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"cannot read model metadata {meta_path}: {exc}",
            help="model.json must sit next to model.safetensors, as ddla run writes it",
        ) from exc
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path} is not a valid safetensors file: {exc}") from exc
    if module is None:
        if meta.get("architecture") == "custom":
            raise ConfigError(
                f"{path} holds a custom model",
                help="build your module and pass it: load_model(path, module)",
            )
        members = int((meta.get("ensemble") or {}).get("members", 0))
        modules = [
            build_model(
                ModelConfig(**meta["architecture"]),
                input_shape=tuple(meta["input_shape"]),
                num_classes=int(meta["num_classes"]),
            )
            for _ in range(max(members, 1))
        ]
        if members:  # ddla merge --method ensemble: the mean of the members' probabilities
            from ddla.models.fusion.ensemble import Ensemble

            module = Ensemble(modules)
        else:
            module = modules[0]
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{path} does not match its architecture: {exc}") from exc
    return module, meta


def load_preprocess(path: str | Path, meta: dict[str, Any]) -> Transform | None:
    """The transform saved with the model at ``path`` (None when it was trained without one)."""
    info = meta.get("preprocess")
    if not info:
        return None
    from ddla.data.preprocess.transform import Transform

    return Transform.load(Path(path).with_name(info["file"]))
