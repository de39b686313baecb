"""Evaluation meters: loss, accuracy and macro precision/recall/F1 with torchmetrics.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(3, 2)
    >>> m = evaluate(model, torch.randn(10, 3), torch.randint(0, 2, (10,)), num_classes=2)
    >>> sorted(m)
    ['accuracy', 'f1', 'loss', 'precision', 'recall']
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

METRIC_NAMES = ("loss", "accuracy", "precision", "recall", "f1")


def _collection(num_classes: int) -> MetricCollection:
    # Each agent evaluates its own model: torchmetrics must not all-gather its state across the
    # (initialized) process group, which would deadlock when only rank 0 evaluates.
    local = {"num_classes": num_classes, "sync_on_compute": False, "dist_sync_on_step": False}
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(average="micro", **local),
            "precision": MulticlassPrecision(average="macro", **local),
            "recall": MulticlassRecall(average="macro", **local),
            "f1": MulticlassF1Score(average="macro", **local),
        }
    )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 2048,
) -> dict[str, float]:
    """Mean cross-entropy loss and classification metrics of ``model`` on ``(x, y)``."""
    was_training = model.training
    model.eval()
    metrics = _collection(num_classes)
    total_loss = 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = model(xb)
        total_loss += F.cross_entropy(logits, yb, reduction="sum").item()
        metrics.update(logits, yb)
    model.train(was_training)
    out = {k: float(v) for k, v in metrics.compute().items()}
    out["loss"] = total_loss / max(len(x), 1)
    return out
