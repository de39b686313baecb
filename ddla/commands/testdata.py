"""The test set a saved model is scored on, checked against its ``model.json`` and passed
through its saved ``data.preprocess`` transform (``ddla eval`` and ``ddla merge``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ddla.errors import DataError


def model_test_set(
    model_path: str | Path,
    meta: dict[str, Any],
    *,
    dataset: str | None,
    root: str | None,
    size: int | None,
    seed: int,
) -> tuple[str, torch.Tensor, torch.Tensor, int]:
    """``(name, x_test, y_test, num_classes)`` for the model at ``model_path``: its dataset
    (or ``dataset``), shape and task checked, transformed as the model was trained."""
    from ddla.data import load_dataset
    from ddla.models.export import load_preprocess
    from ddla.tasks import get_task

    name = dataset or meta["dataset"]
    task = get_task(meta.get("task", "classification"))
    context = meta["input_shape"][0] if task.name == "lm" else 128
    ds = load_dataset(name, root=root, size=size, seed=seed, context=context)
    transform = load_preprocess(model_path, meta)
    expected = tuple(transform.input_shape if transform is not None else meta["input_shape"])
    if tuple(ds.input_shape) != expected or ds.num_classes != meta["num_classes"]:
        raise DataError(
            f"model expects inputs {expected} and {meta['num_classes']} classes; "
            f"{name} has {tuple(ds.input_shape)} and {ds.num_classes}",
            help=f"evaluate on the dataset it was trained on ({meta['dataset']})",
        )
    if getattr(ds, "task", "classification") != task.name:
        raise DataError(
            f"model is a {task.name} model but {name} is a {getattr(ds, 'task', 'classification')} "
            "dataset",
            help=f"evaluate on the dataset it was trained on ({meta['dataset']})",
        )
    x = transform(ds.x_test) if transform is not None else ds.x_test
    return name, x, ds.y_test, ds.num_classes
