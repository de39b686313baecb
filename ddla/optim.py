"""The agents' (inner) optimizer: configuration and construction (``optim.*``).

Example:
    >>> import torch
    >>> opt = build_optimizer(OptimConfig(name="sgd", lr=0.1), torch.nn.Linear(2, 2).parameters())
    >>> type(opt).__name__, opt.defaults["lr"]
    ('SGD', 0.1)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ddla.choices import check_choices, choice
from ddla.errors import ConfigError

OPTIMIZERS = ("auto", "sgd", "adamw", "adam")
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

    def __post_init__(self) -> None:
        check_choices(self, "optim")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
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
