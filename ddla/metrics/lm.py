"""Language-model meters: per-token cross-entropy, perplexity and next-token accuracy.

Perplexity is torchmetrics' :class:`~torchmetrics.text.Perplexity` (exp of the mean negative
log-likelihood per token); next-token accuracy is :class:`MulticlassAccuracy` over the
vocabulary, micro-averaged over every predicted token.

Example:
    >>> import torch
    >>> model = torch.nn.Embedding(256, 256)   # logits for the next byte from the current one
    >>> x = torch.randint(0, 256, (4, 8)); y = torch.randint(0, 256, (4, 8))
    >>> m = evaluate_lm(model, x, y, num_classes=256)
    >>> sorted(m), abs(m["perplexity"] - __import__("math").exp(m["loss"])) < 1e-2 * m["perplexity"]
    (['accuracy', 'loss', 'perplexity'], True)
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import Perplexity

__all__ = ["LM_METRIC_NAMES", "evaluate_lm", "lm_cross_entropy"]

LM_METRIC_NAMES = ("loss", "perplexity", "accuracy")


def lm_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per token: logits ``[B, T, V]`` against targets ``[B, T]``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


@torch.no_grad()
def evaluate_lm(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    batch_size: int = 32,
) -> dict[str, float]:
    """Validation loss (nats per token), perplexity and next-token accuracy of ``model``.

    ``batch_size`` is in windows: the logits of one batch are ``batch_size * T * V`` floats,
    so it stays small (32 windows of 128 tokens over 256 bytes: 4 MB).
    """
    was_training = model.training
    model.eval()
    # Each agent evaluates its own model: no all-gather of metric state across the group.
    local = {"sync_on_compute": False, "dist_sync_on_step": False}
    perplexity = Perplexity(**local)
    accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro", **local)
    total, tokens = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = model(xb).float()
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), yb.reshape(-1), reduction="sum"
        ).item()
        tokens += yb.numel()
        perplexity.update(logits, yb)
        accuracy.update(logits.reshape(-1, logits.shape[-1]), yb.reshape(-1))
    model.train(was_training)
    return {
        "loss": total / max(tokens, 1),
        "perplexity": float(perplexity.compute()),
        "accuracy": float(accuracy.compute()),
    }
