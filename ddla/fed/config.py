"""Configuration of federated mode (``fed.*`` in a run file or ``--set``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ddla.errors import ConfigError


@dataclass(kw_only=True, slots=True)
class FedConfig:
    """Clients, sampling, local work and aggregation of a federated run.

    Example:
        >>> FedConfig(clients=100, fraction=0.1).epochs
        1
    """

    clients: int = 0
    """Number of logical clients M (partitions of the training set by ``data.partition``);
    0 = not federated. Needs a federated ``sync.strategy`` (``fedavg``, ``fedsgd``)."""
    fraction: float = 0.1
    """Fraction C of clients sampled each round (at least one)."""
    epochs: int = 1
    """Local epochs E each sampled client trains per round."""
    batch: int = 10
    """Local minibatch size B; 0 = the client's whole shard (B = inf)."""
    aggregate: str = "mean"
    """How client updates combine: ``mean`` (weighted by example counts) or a robust rule of
    :mod:`ddla.aggregate.robust` (``median``, ``trimmed_mean:BETA``, ``krum:F``,
    ``multikrum:F,M``, ``bulyan:F``; unweighted, need individual updates)."""
    clip: float = 0.0
    """Clip each client update to this L2 norm before aggregation; 0 = no clipping."""
    server_lr: float = 1.0
    """Server learning rate: the global model moves by ``server_lr`` times the aggregate."""

    def __post_init__(self) -> None:
        from ddla.aggregate.robust import parse_rule

        if self.clients < 0:
            raise ConfigError(f"fed.clients must be >= 0, got {self.clients}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"fed.fraction must be in (0, 1], got {self.fraction}")
        if self.epochs < 1:
            raise ConfigError(f"fed.epochs must be >= 1, got {self.epochs}")
        if self.batch < 0:
            raise ConfigError(f"fed.batch must be >= 0 (0 = whole shard), got {self.batch}")
        if not (math.isfinite(self.clip) and self.clip >= 0):
            raise ConfigError(f"fed.clip must be >= 0, got {self.clip}")
        if not (math.isfinite(self.server_lr) and self.server_lr > 0):
            raise ConfigError(f"fed.server_lr must be > 0, got {self.server_lr}")
        parse_rule(self.aggregate)

    @property
    def per_round(self) -> int:
        """Clients sampled each round."""
        return max(1, round(self.fraction * self.clients))


def check_fed(config) -> None:
    """Cross-section rules of federated mode, checked when the RunConfig is built."""
    from ddla.aggregate.robust import parse_rule, refuse_robust_secure
    from ddla.sync import STRATEGIES

    fed, strategy = config.fed, config.sync.strategy
    federated = getattr(STRATEGIES[strategy], "federated", False)
    if federated and fed.clients < 1:
        raise ConfigError(
            f"sync.strategy={strategy} needs fed.clients >= 1",
            help="e.g. --set fed.clients=100 --set fed.fraction=0.1",
        )
    if not federated and fed.clients:
        raise ConfigError(
            f"fed.clients={fed.clients} needs a federated sync.strategy, got {strategy!r}",
            help="use --set sync.strategy=fedavg (or fedsgd)",
        )
    if not federated:
        return
    if getattr(config.data, "source", None) is not None:
        raise ConfigError(
            f"sync.strategy={strategy} partitions one dataset into fed.clients; data.source "
            "gives each agent its own data, with nothing to partition",
            help="unset data.source (use data.dataset), or use a non-federated sync.strategy",
        )
    if strategy == "fedsgd" and (fed.epochs != 1 or fed.batch != 0):
        raise ConfigError(
            f"sync.strategy=fedsgd is E=1, B=inf; got fed.epochs={fed.epochs}, "
            f"fed.batch={fed.batch}",
            help="add --set fed.epochs=1 --set fed.batch=0, or use sync.strategy=fedavg",
        )
    rule = parse_rule(fed.aggregate)
    if fed.per_round < rule.min_updates():
        raise ConfigError(
            f"fed.aggregate={fed.aggregate} needs at least {rule.min_updates()} client updates "
            f"per round; fed.clients * fed.fraction gives {fed.per_round}",
            help="raise fed.fraction or fed.clients, or lower F",
        )
    refuse_robust_secure(fed.aggregate, config.security.secure_aggregation)
    if rule.robust and config.sync.compress != "none":
        raise ConfigError(
            f"fed.aggregate={fed.aggregate} with sync.compress={config.sync.compress} is not "
            "supported: robust rules gather individual fp32 updates",
            help="use fed.aggregate=mean with a compressor, or sync.compress=none",
        )
