"""Synchronization strategies, one per file, and their registry.

Example:
    >>> from ddla.sync import STRATEGIES
    >>> "allreduce" in STRATEGIES
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ddla.sync.allreduce import AllReduce
from ddla.sync.base import Strategy
from ddla.sync.config import SyncConfig
from ddla.sync.diloco import DiLoCo
from ddla.sync.local_sgd import LocalSGD
from ddla.sync.streaming_diloco import StreamingDiLoCo

if TYPE_CHECKING:
    import torch

    from ddla.aggregate import Protection
    from ddla.comm import Transport

STRATEGIES: dict[str, type[Strategy]] = {
    "allreduce": AllReduce,
    "local_sgd": LocalSGD,
    "diloco": DiLoCo,
    "streaming_diloco": StreamingDiLoCo,
}


def build_strategy(
    config: SyncConfig,
    *,
    transport: Transport,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    protection: Protection | None = None,
) -> Strategy:
    """Build the strategy named by ``config.strategy`` around a model and its optimizer;
    ``protection`` (masking, audit) is the security layer of its aggregation."""
    cls = STRATEGIES[config.strategy]
    return cls(
        transport=transport, model=model, optimizer=optimizer, config=config, protection=protection
    )


__all__ = ["STRATEGIES", "Strategy", "SyncConfig", "build_strategy"]
