"""What one agent trains: a model, its data, and how to build its optimizer.

A :class:`Job` is the Python API's unit of work. ``ddla run`` builds one from the RunConfig
(:func:`job_from_config`); users build their own and hand a factory to :func:`ddla.launch`.
The training set is the *whole* set: ddla partitions it across agents with
``data.partition``, so every agent must build the same Job (use fixed seeds).

Example:
    >>> import torch
    >>> from ddla import Job
    >>> x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    >>> job = Job(model=torch.nn.Linear(5, 3), train=(x, y), test=(x, y))
    >>> job.num_classes
    3
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ddla.errors import DataError
from ddla.tasks import Task, get_task

if TYPE_CHECKING:
    from ddla.config import RunConfig
    from ddla.models import ModelConfig

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(kw_only=True)
class Job:
    """A model plus the full train and test sets; ddla shards ``train`` across agents.

    ``task="lm"`` makes it a language-model job: ``train``/``test`` are token windows
    ``(x [N, T], y [N, T])`` with ``y`` the next tokens, ``classes`` the vocabulary, the loss
    per-token cross-entropy and the metrics loss, perplexity and next-token accuracy.
    """

    model: torch.nn.Module
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    optimizer: OptimizerFactory | None = None
    """Builds the local optimizer from parameters; None uses ``optim.*`` of the run config."""
    loss: LossFn | None = None
    """Training loss ``loss(model(x), y)``; None uses the task's (cross-entropy)."""
    task: str = "classification"
    """``classification`` or ``lm`` (see :mod:`ddla.tasks`)."""
    groups: torch.Tensor | None = None
    """What partitions split on, one id per training sample (a text window's document);
    None uses the training labels."""
    data_info: dict[str, Any] | None = None
    """Provenance of the data (a text corpus's files and SHA-256), copied into summary.json."""
    classes: Sequence[str] | None = None
    """Class names (for reports); default ``0..C-1``."""
    name: str = "custom"
    """Dataset name recorded in summary.json and model.json."""
    model_config: ModelConfig | None = None
    """Set for zoo models so ``model.json`` can rebuild the architecture."""

    def __post_init__(self) -> None:
        spec = get_task(self.task)
        if self.loss is None:
            self.loss = spec.loss
        if self.groups is not None and len(self.groups) != len(self.train[0]):
            raise DataError(
                f"groups: {len(self.groups)} ids for {len(self.train[0])} training samples",
                help="give one partition id per training sample",
            )
        for split, (x, y) in (("train", self.train), ("test", self.test)):
            if len(x) != len(y):
                raise DataError(f"{split}: {len(x)} samples but {len(y)} labels")
            if len(x) == 0:
                raise DataError(f"{split} set is empty")
        if self.classes is None:
            n = int(max(self.train[1].max(), self.test[1].max())) + 1
            self.classes = tuple(str(i) for i in range(n))

    @property
    def task_spec(self) -> Task:
        """The :class:`~ddla.tasks.Task` named by :attr:`task`."""
        return get_task(self.task)

    @property
    def partition_labels(self) -> torch.Tensor:
        """One id per training sample for the partitioner: :attr:`groups` or the labels."""
        return self.groups if self.groups is not None else self.train[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes or ())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])


def job_from_config(config: RunConfig) -> Job:
    """Load the configured dataset and build the configured zoo model (seeded)."""
    from ddla.data import load_dataset
    from ddla.models import build_model

    ds = load_dataset(
        config.data.dataset,
        root=config.data.root,
        size=config.data.size,
        seed=config.train.seed,
        cache_dir=config.data.cache_dir,
        context=config.data.context,
    )
    model = build_model(
        config.model,
        input_shape=ds.input_shape,
        num_classes=ds.num_classes,
        seed=config.train.seed,
    )
    return Job(
        model=model,
        train=(ds.x_train, ds.y_train),
        test=(ds.x_test, ds.y_test),
        classes=tuple(ds.classes),
        name=ds.name,
        model_config=config.model,
        task=getattr(ds, "task", "classification"),
        groups=getattr(ds, "groups_train", None),
        data_info=getattr(ds, "provenance", None),
    )
