"""How long a run trains: ``train.steps``, ``train.epochs``, or a default per dataset and model.

A new user who types ``ddla run --dataset fashion-mnist`` should get a model that reaches a
known-good accuracy, not one stopped after a fixed 600 steps whatever the data. When neither
``train.steps`` nor ``train.epochs`` is given, the budget comes from :data:`DEFAULT_EPOCHS`
(measured here; docs/benchmarks.md records the runs), else :data:`DEFAULT_STEPS`.

One *epoch* is one pass over the whole training set by all agents together: with N agents of
batch B on a training set of size S it is ``ceil(S / (N * B))`` steps, so the same
``train.epochs`` sees the same number of samples whatever N.

Example:
    >>> from ddla.config import TrainConfig
    >>> b = resolve_budget(TrainConfig(epochs=2), dataset="digits", model="mlp",
    ...                    train_size=1000, agents=4, batch_size=25)
    >>> b.steps, b.describe()
    (20, '20 steps (2 epochs, train.epochs)')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ddla.config import TrainConfig

#: Steps when neither train.steps, train.epochs nor a default below applies.
DEFAULT_STEPS = 600
#: Default budgets in epochs, by (dataset, model), chosen to reach known-good accuracy.
DEFAULT_EPOCHS: dict[tuple[str, str], float] = {
    ("fashion-mnist", "mlp"): 6.0,
    ("mnist1d", "cnn"): 20.0,
}


@dataclass(frozen=True, slots=True)
class Budget:
    """The resolved budget: optimizer steps per agent, as epochs, and where it came from."""

    steps: int
    epochs: float
    source: str

    def describe(self) -> str:
        return f"{self.steps} steps ({self.epochs:.3g} epochs, {self.source})"

    def as_dict(self) -> dict[str, object]:
        return {"steps": self.steps, "epochs": self.epochs, "source": self.source}


def steps_per_epoch(train_size: int, agents: int, batch_size: int) -> int:
    return max(1, math.ceil(train_size / (agents * batch_size)))


def resolve_budget(
    train: TrainConfig,
    *,
    dataset: str,
    model: str,
    train_size: int,
    agents: int,
    batch_size: int,
) -> Budget:
    """The run's budget from ``train.steps``, ``train.epochs`` or the defaults."""
    per_epoch = steps_per_epoch(train_size, agents, batch_size)
    if train.steps is not None:
        return Budget(train.steps, train.steps / per_epoch, "train.steps")
    if train.epochs is not None:
        return Budget(max(1, round(train.epochs * per_epoch)), train.epochs, "train.epochs")
    epochs = DEFAULT_EPOCHS.get((dataset, model))
    if epochs is not None:
        return Budget(
            max(1, round(epochs * per_epoch)), epochs, f"default for {dataset} with {model}"
        )
    return Budget(DEFAULT_STEPS, DEFAULT_STEPS / per_epoch, "default")
