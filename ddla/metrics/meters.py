"""Evaluation meters: loss, accuracy and macro precision/recall/F1 with torchmetrics.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(3, 2)
    >>> m = evaluate(model, torch.randn(10, 3), torch.randint(0, 2, (10,)), num_classes=2)
    >>> sorted(m)
    ['accuracy', 'f1', 'loss', 'precision', 'recall']
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

METRIC_NAMES = ("loss", "accuracy", "precision", "recall", "f1")


def _collection(num_classes: int) -> MetricCollection:
    # Imported at the first evaluation, not with ddla: torchmetrics' own __init__ imports
    # scipy.signal, PIL and matplotlib (1-3 s per process), which an agent's first step
    # does not need.
    from torchmetrics import MetricCollection
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

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


@torch.no_grad()
def evaluate_counts(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 2048,
) -> dict[str, Any]:
    """What :func:`metrics_from_counts` needs of one test set: confusion matrix and loss sum.

    Sites send these instead of their samples; summing them over sites gives the metrics of
    the concatenated test sets.
    """
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64)
    loss_sum = 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        pred = logits.argmax(dim=1)
        confusion += torch.bincount(yb * num_classes + pred, minlength=num_classes**2)
    model.train(was_training)
    return {
        "confusion": confusion.view(num_classes, num_classes).tolist(),
        "loss_sum": loss_sum,
        "samples": len(y),
    }


def metrics_from_counts(parts: list[dict[str, Any]]) -> dict[str, float]:
    """Loss, accuracy and macro precision/recall/F1 of the union of several test sets.

    Hand-written because torchmetrics computes from predictions, which would have to travel;
    the confusion matrix is their sufficient statistic. Averaging follows torchmetrics'
    ``average="macro"``: a class that appears neither as a label nor as a prediction is left
    out, and a zero denominator counts as 0 (its ``_safe_divide``).
    """
    cm = torch.tensor([p["confusion"] for p in parts], dtype=torch.float64).sum(0)
    n = sum(p["samples"] for p in parts)
    tp = cm.diagonal()
    fp = cm.sum(0) - tp  # predicted as the class, labelled otherwise
    fn = cm.sum(1) - tp
    present = (tp + fp + fn) > 0
    weights = present.double()

    def safe(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))

    def macro(score: torch.Tensor) -> float:
        return float((score * weights).sum() / weights.sum()) if weights.sum() else 0.0

    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "precision": macro(safe(tp, tp + fp)),
        "recall": macro(safe(tp, tp + fn)),
        "f1": macro(safe(2 * tp, 2 * tp + fp + fn)),
        "loss": sum(p["loss_sum"] for p in parts) / max(n, 1),
    }
