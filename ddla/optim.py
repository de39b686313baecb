"""The agents' (inner) optimizer: configuration and construction (``optim.*``).

Example:
    >>> import torch
    >>> opt = build_optimizer(OptimConfig(name="sgd", lr=0.1), torch.nn.Linear(2, 2).parameters())
    >>> type(opt).__name__, opt.defaults["lr"]
    ('SGD', 0.1)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ddla.choices import check_choices, choice
from ddla.errors import ConfigError

OPTIMIZERS = ("auto", "sgd", "adamw", "adam")
#: ``optim.schedule`` values: the learning rate over the run (see :func:`lr_factor`).
SCHEDULES = ("cosine", "constant")
#: Learning rates that train the zoo's models well on the built-in datasets.
DEFAULT_LR = {"sgd": 0.05, "adamw": 1e-3, "adam": 1e-3}


@dataclass(kw_only=True, slots=True)
class OptimConfig:
    """Each agent's local optimizer."""

    name: str = choice("auto", OPTIMIZERS, noun="optimizer")
    """``sgd``, ``adamw``, ``adam``, or ``auto`` (the strategy's default: SGD for ``allreduce``)."""
    lr: float | None = None
    """Learning rate; None picks a default for the optimizer (SGD 0.05, Adam/AdamW 1e-3)."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 0.0
    """Decoupled (AdamW) or L2 (SGD, Adam) weight decay."""
    schedule: str = "cosine"
    """Learning rate over the run: ``cosine`` (decays from ``lr`` to 0 at the last step, as
    most published recipes do; the end of the run is then not at the mercy of one noisy
    step) or ``constant``. The schedule follows ``train.steps``: a resumed run given more
    steps continues on the longer schedule. Not applied to a Job's own optimizer factory."""

    def __post_init__(self) -> None:
        check_choices(self, "optim")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"optim.schedule: unknown schedule {self.schedule!r}",
                help=f"choose one of: {', '.join(SCHEDULES)}",
            )
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"optim.momentum must be in [0, 1), got {self.momentum}")


def build_optimizer(
    config: OptimConfig,
    params: Iterable[torch.nn.Parameter],
    *,
    default: str = "sgd",
) -> torch.optim.Optimizer:
    """Build the optimizer; ``default`` is used when ``config.name`` is ``auto``."""
    name = default if config.name == "auto" else config.name
    lr = config.lr if config.lr is not None else DEFAULT_LR[name]
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)


def lr_factor(schedule: str, step: int, steps: int) -> float:
    """The multiplier of the base learning rate for optimizer step ``step`` of ``steps``.

    Example:
        >>> [round(lr_factor("cosine", s, 4), 3) for s in range(4)]
        [1.0, 0.854, 0.5, 0.146]
        >>> lr_factor("constant", 3, 4)
        1.0
    """
    if schedule == "constant" or steps <= 1:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * step / steps))


class LrSchedule:
    """Sets each param group's ``lr`` to base x :func:`lr_factor` before every step.

    A pure function of the step, so a resumed run needs no scheduler state in its checkpoint.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: str, steps: int) -> None:
        self.optimizer, self.schedule, self.steps = optimizer, schedule, steps
        self.base = [float(g["lr"]) for g in optimizer.param_groups]

    def apply(self, step: int) -> None:
        factor = lr_factor(self.schedule, step, self.steps)
        for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
            group["lr"] = base * factor
