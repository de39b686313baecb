"""What a job learns: the task decides its loss, its metrics and the partitions that fit it.

Two tasks exist. ``classification`` (one label per sample; loss cross-entropy; metrics
accuracy and macro precision/recall/F1 through torchmetrics) and ``lm`` (next-token
prediction on windows of tokens; loss cross-entropy per token; metrics validation loss,
perplexity and next-token accuracy). Everything downstream of the model asks the job's task
instead of assuming a classifier: the evaluator, the summary, ``ddla eval``, the partitioner.

Example:
    >>> get_task("lm").metrics
    ('loss', 'perplexity', 'accuracy')
    >>> [resolve_partition("auto", get_task(t)) for t in ("lm", "classification")]
    ['contiguous', 'iid']
    >>> resolve_partition("dirichlet:0.5", get_task("lm"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ddla.errors.ConfigError: partition 'dirichlet:0.5' does not fit a language-model dataset; ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

from ddla.errors import ConfigError

if TYPE_CHECKING:
    from ddla.config import RunConfig

__all__ = ["CLASSIFICATION", "LANGUAGE_MODEL", "TASKS", "Task", "get_task", "resolve_partition"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Evaluate = Callable[..., dict[str, float]]


@dataclass(frozen=True, slots=True)
class Task:
    """A learning task: loss, evaluation, metric names, and the partitions that make sense."""

    name: str
    description: str
    metrics: tuple[str, ...]
    """Keys of ``summary.json``'s ``final`` (all from :attr:`evaluate`)."""
    headline: str
    """The metric logged at each evaluation beside the loss."""
    default_partition: str
    """What ``data.partition=auto`` means for this task."""
    partitions: tuple[str, ...] | None
    """Allowed partition schemes (None: every scheme)."""
    loss: LossFn
    evaluate: Evaluate
    """``evaluate(model, x, y, *, num_classes) -> {metric: value}``."""
    labelled: bool
    """One class label per sample (what ``data.share`` and ``data.pull_every`` trade in)."""

    def tokens_per_sample(self, input_shape: tuple[int, ...]) -> int | None:
        """Tokens one sample trains on: a language model's context; None for a classifier."""
        return int(input_shape[0]) if self.name == "lm" else None


def _evaluate_classification(model, x, y, *, num_classes: int) -> dict[str, float]:
    from ddla.metrics.meters import evaluate

    return evaluate(model, x, y, num_classes=num_classes)


def _evaluate_lm(model, x, y, *, num_classes: int) -> dict[str, float]:
    from ddla.metrics.lm import evaluate_lm

    return evaluate_lm(model, x, y, num_classes=num_classes)


def _lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from ddla.metrics.lm import lm_cross_entropy

    return lm_cross_entropy(logits, targets)


CLASSIFICATION = Task(
    name="classification",
    description="one label per sample",
    metrics=("accuracy", "precision", "recall", "f1", "loss"),
    headline="accuracy",
    default_partition="iid",
    partitions=None,
    loss=F.cross_entropy,
    evaluate=_evaluate_classification,
    labelled=True,
)
LANGUAGE_MODEL = Task(
    name="lm",
    description="next-token prediction on token windows",
    metrics=("loss", "perplexity", "accuracy"),
    headline="perplexity",
    default_partition="contiguous",
    # Label-skew schemes (dirichlet, shards) need class labels; a window's "label" here is
    # its document, so they would only shuffle documents under a misleading name.
    partitions=("iid", "contiguous", "quantity"),
    loss=_lm_loss,
    evaluate=_evaluate_lm,
    labelled=False,
)
TASKS: dict[str, Task] = {t.name: t for t in (CLASSIFICATION, LANGUAGE_MODEL)}


def get_task(name: str) -> Task:
    """The task of that name (``classification`` or ``lm``)."""
    task = TASKS.get(name)
    if task is None:
        raise ConfigError(
            f"unknown task {name!r}", help=f"a Job's task is one of: {', '.join(TASKS)}"
        )
    return task


def resolve_partition(spec: str, task: Task) -> str:
    """The partition spec to use: ``auto`` becomes the task's default; misfits are refused."""
    if spec == "auto":
        return task.default_partition
    scheme = spec.strip().partition(":")[0]
    if task.partitions is not None and scheme not in task.partitions:
        allowed = ", ".join(
            p if p in ("iid", "contiguous") else f"{p}:ALPHA" for p in task.partitions
        )
        raise ConfigError(
            f"partition {spec!r} does not fit a language-model dataset; allowed: {allowed}",
            help="text is split by documents: data.partition=contiguous (default) or iid",
        )
    return spec


def check_task_config(task: Task, config: RunConfig) -> None:
    """Refuse settings the task cannot honour (one clear line), before any agent trains."""
    resolve_partition(config.data.partition, task)
    if not task.labelled and (config.data.share != "none" or config.data.pull_every):
        raise ConfigError(
            "data.share and data.pull_every trade samples by class label, which a "
            f"{task.name} dataset does not have",
            help="leave data.share=none and data.pull_every=0 for text datasets",
        )
