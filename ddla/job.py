"""What one agent trains: a model, its data, and how to build its optimizer.

A :class:`Job` is the Python API's unit of work. ``ddla run`` builds one from the RunConfig
(:func:`job_from_config`); users build their own and hand a factory to :func:`ddla.launch`.
A tuple ``train`` is the *whole* set: ddla partitions it across agents with
``data.partition``, so every agent must build the same Job (use fixed seeds). A callable
``train`` is data that already lives at each agent: ``train(rank)`` returns that agent's own
``(x, y)``, nothing is partitioned, and the agents agree on shapes, dtypes and the label space
before training (:mod:`ddla.data.sources`); ``site_test(rank)`` gives each site's test set.

Example:
    >>> import torch
    >>> from ddla import Job
    >>> x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    >>> job = Job(model=torch.nn.Linear(5, 3), train=(x, y), test=(x, y))
    >>> job.num_classes
    3
    >>> own = Job(model=torch.nn.Linear(5, 3), train=lambda rank: (x[rank::2], y[rank::2]),
    ...           test=(x, y), classes=("a", "b", "c"))
    >>> own.is_local
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ddla.errors import DataError
from ddla.tasks import Task, get_task

if TYPE_CHECKING:
    from ddla.comm import Transport
    from ddla.config import RunConfig
    from ddla.data.sources import Agreement
    from ddla.models import ModelConfig

Split = tuple[torch.Tensor, torch.Tensor]
PerAgent = Callable[[int], Split]
OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
FeatureFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(kw_only=True)
class Job:
    """A model plus its data: the full train set (ddla shards it) or each agent's own.

    ``task="lm"`` makes it a language-model job: ``train``/``test`` are token windows
    ``(x [N, T], y [N, T])`` with ``y`` the next tokens, ``classes`` the vocabulary, the loss
    per-token cross-entropy and the metrics loss, perplexity and next-token accuracy.
    """

    model: torch.nn.Module
    train: Split | PerAgent
    """The whole training set ``(x, y)``, or ``rank -> (x, y)``: each agent's own data."""
    test: Split | None
    """The shared test set (the global model's figure); None with per-site test sets only."""
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
    site_test: Split | PerAgent | None = None
    """This site's own test set, or ``rank -> (x, y)``: the global model is evaluated on
    each site's test data (``site`` rows in metrics.jsonl and the summary)."""
    agreement: Agreement | None = None
    """Set when the agents already agreed on their data (``data.source``)."""
    local: bool = False
    """``train`` is already this agent's own data (built by :func:`site_job`)."""
    preprocess: FeatureFn | None = None
    """Feature extraction ``x -> features`` every agent applies to its own data (train, test,
    site test) before anything else, e.g. a frozen pretrained encoder; ``data.preprocess``
    statistics are then fitted on the features and ``data.share=features:F`` shares them
    instead of raw samples. The model takes the features' shape."""
    feature_shape: tuple[int, ...] | None = None
    """Set by the run once ``data.preprocess`` changed the model's input shape (``pca:K``)."""

    def __post_init__(self) -> None:
        spec = get_task(self.task)
        if self.loss is None:
            self.loss = spec.loss
        if callable(self.train) and not spec.labelled:
            raise DataError(
                f"a per-agent train (rank -> data) is for labelled data, not task={self.task!r}",
                help="pass the whole token set as train=(x, y): ddla partitions it",
            )
        if self.groups is not None:
            if callable(self.train):
                raise DataError(
                    "groups: a per-agent train (rank -> data) is not partitioned",
                    help="leave groups unset when each agent brings its own data",
                )
            if len(self.groups) != len(self.train[0]):
                raise DataError(
                    f"groups: {len(self.groups)} ids for {len(self.train[0])} training samples",
                    help="give one partition id per training sample",
                )
        splits = [("train", self.train), ("test", self.test), ("site_test", self.site_test)]
        for split, pair in splits:
            if pair is None or callable(pair):
                continue
            x, y = pair
            if len(x) != len(y):
                raise DataError(f"{split}: {len(x)} samples but {len(y)} labels")
            if len(x) == 0:
                raise DataError(f"{split} set is empty")
        if self.test is None and self.site_test is None:
            raise DataError("a Job needs a test set", help="pass test=(x, y), site_test, or both")
        if self.classes is None:
            known = [p[1] for _, p in splits if p is not None and not callable(p)]
            if callable(self.train) or not known:
                raise DataError(
                    "a Job whose train set lives at each agent needs classes=",
                    help="pass classes=(...): the label space every agent trains on",
                )
            n = int(max(int(y.max()) for y in known)) + 1
            self.classes = tuple(str(i) for i in range(n))

    @property
    def is_local(self) -> bool:
        """True when each agent trains on its own data (nothing is partitioned)."""
        return self.local or callable(self.train)

    @property
    def task_spec(self) -> Task:
        """The :class:`~ddla.tasks.Task` named by :attr:`task`."""
        return get_task(self.task)

    @property
    def partition_labels(self) -> torch.Tensor:
        """One id per training sample for the partitioner: :attr:`groups` or the labels."""
        if self.groups is not None:
            return self.groups
        if callable(self.train):
            raise DataError("partition_labels: a per-agent train (rank -> data) is not partitioned")
        return self.train[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes or ())

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.feature_shape is not None:
            return self.feature_shape
        if self.agreement is not None:
            return self.agreement.input_shape
        if callable(self.train):
            pair = self.test if self.test is not None else self.site_test
            if pair is None or callable(pair):
                raise DataError("the input shape of a per-agent Job is known only in the run")
            return tuple(pair[0].shape[1:])
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
        cache=config.data.cache,
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


def site_job(config: RunConfig, transport: Transport) -> Job:
    """This agent's Job from ``data.source``: its own file, agreed with the others first.

    The agents exchange descriptors of their data (never samples) and agree on the label
    space before the model is built, so every agent builds the same architecture.
    """
    from ddla.data.sources import load_and_agree
    from ddla.models import build_model

    site, agreement = load_and_agree(
        config.data.source, transport, seed=config.train.seed, test_spec=config.data.test_source
    )
    model = build_model(
        config.model,
        input_shape=agreement.input_shape,
        num_classes=agreement.num_classes,
        seed=config.train.seed,
    )
    return Job(
        model=model,
        train=site.train,
        test=site.shared_test,
        site_test=site.site_test,
        classes=agreement.classes,
        name=f"sources:{config.data.source}",
        model_config=config.model,
        agreement=agreement,
        local=True,
    )
