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
from ddla.sync.fedadam import FedAdam
from ddla.sync.fedavg import FedAvg
from ddla.sync.fedavgm import FedAvgM
from ddla.sync.federated import FederatedStrategy
from ddla.sync.fedprox import FedProx
from ddla.sync.fedsgd import FedSGD
from ddla.sync.fedyogi import FedYogi
from ddla.sync.gossip import Gossip
from ddla.sync.local_sgd import LocalSGD
from ddla.sync.param_server import ParamServer
from ddla.sync.scaffold import Scaffold
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
    "fedavg": FedAvg,
    "fedsgd": FedSGD,
    "fedprox": FedProx,
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "scaffold": Scaffold,
    "param_server": ParamServer,
    "gossip": Gossip,
}


def build_strategy(
    config: SyncConfig,
    *,
    transport: Transport,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    protection: Protection | None = None,
    server_lr: float = 1.0,
) -> Strategy:
    """Build the strategy named by ``config.strategy`` around a model and its optimizer;
    ``protection`` (masking, audit) is the security layer of its aggregation."""
    cls = STRATEGIES[config.strategy]
    extra = {"server_lr": server_lr} if issubclass(cls, FederatedStrategy) else {}
    return cls(
        **extra,
        transport=transport,
        model=model,
        optimizer=optimizer,
        config=config,
        protection=protection,
    )


__all__ = ["STRATEGIES", "FederatedStrategy", "Strategy", "SyncConfig", "build_strategy"]
