"""Configuration of federated mode (``fed.*`` in a run file or ``--set``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ddla.choices import check_choices, choice
from ddla.errors import ConfigError

#: ``fed.dp`` values: where DP-FedAvg's Gaussian noise is added (none = DP off).
DP_MODES = ("none", "central", "distributed")


@dataclass(kw_only=True, slots=True)
class FedConfig:
    """Clients, sampling, local work, aggregation, server optimizer and privacy of a run.

    Example:
        >>> FedConfig(clients=100, fraction=0.1).epochs
        1
    """

    clients: int = 0
    """Number of logical clients M (partitions of the training set by ``data.partition``);
    0 = not federated. Needs a federated ``sync.strategy`` (``fedavg``, ``fedsgd``,
    ``fedprox``, ``fedavgm``, ``fedadam``, ``fedyogi``, ``scaffold``)."""
    fraction: float = 0.1
    """Fraction C of clients sampled each round (at least one; with ``fed.dp`` each client is
    sampled independently with probability C, as the privacy accountant assumes)."""
    epochs: int = 1
    """Local epochs E each sampled client trains per round."""
    batch: int = 10
    """Local minibatch size B; 0 = the client's whole shard (B = inf)."""
    aggregate: str = "mean"
    """How client updates combine: ``mean`` (weighted by example counts) or a robust rule of
    :mod:`ddla.aggregate.robust` (``median``, ``trimmed_mean:BETA``, ``krum:F``,
    ``multikrum:F,M``, ``bulyan:F``; unweighted, need individual updates)."""
    clip: float = 0.0
    """Clip each client update to this L2 norm before aggregation; 0 = no clipping. With
    ``fed.dp`` it is DP-FedAvg's clip S (required)."""
    server_lr: float = 1.0
    """Server learning rate: the global model moves by ``server_lr`` times the aggregate
    (times the server optimizer's direction for ``fedavgm``/``fedadam``/``fedyogi``)."""
    mu: float = 0.01
    """``fedprox``: weight μ of the proximal term (μ/2)·||w - w_global||² of each client."""
    server_momentum: float = 0.9
    """``fedavgm``: server momentum β (v ← β v + Δ)."""
    beta1: float = 0.9
    """``fedadam``/``fedyogi``: first-moment decay β1 of the server optimizer."""
    beta2: float = 0.99
    """``fedadam``/``fedyogi``: second-moment decay β2 of the server optimizer."""
    tau: float = 1e-3
    """``fedadam``/``fedyogi``: adaptivity τ (denominator sqrt(v) + τ; v starts at τ²)."""
    dp: str = choice("none", DP_MODES, noun="DP mode")
    """DP-FedAvg (McMahan et al. 2018): ``central`` adds the Gaussian noise σS once to the sum
    of clipped updates; ``distributed`` has every agent add its share N(0, σ²S²/N), so no agent
    ever sends an un-noised sum. Needs ``fed.clip`` = S > 0 and ``fed.aggregate=mean``."""
    dp_noise: float = 1.0
    """Noise multiplier σ: the noise on the sum of clipped updates has std σ·S."""
    dp_delta: float = 1e-5
    """δ of the (ε, δ) the accountant reports after every round."""
    byzantine: str = ""
    """Byzantine test bed ``K:KIND``: K seeded clients send a malicious update; KIND is
    ``signflip``, ``scale:F``, ``gaussian:SIGMA`` or ``labelflip``. Empty = all honest."""

    def __post_init__(self) -> None:
        from ddla.aggregate.robust import parse_rule
        from ddla.fed.byzantine import parse_byzantine

        check_choices(self, "fed")
        if self.clients < 0:
            raise ConfigError(f"fed.clients must be >= 0, got {self.clients}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"fed.fraction must be in (0, 1], got {self.fraction}")
        if self.epochs < 1:
            raise ConfigError(f"fed.epochs must be >= 1, got {self.epochs}")
        if self.batch < 0:
            raise ConfigError(f"fed.batch must be >= 0 (0 = whole shard), got {self.batch}")
        for name in ("clip", "mu", "dp_noise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"fed.{name} must be >= 0, got {value}")
        for name in ("server_lr", "tau"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"fed.{name} must be > 0, got {value}")
        for name in ("server_momentum", "beta1", "beta2"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"fed.{name} must be in [0, 1), got {value}")
        if not 0 < self.dp_delta < 1:
            raise ConfigError(f"fed.dp_delta must be in (0, 1), got {self.dp_delta}")
        parse_rule(self.aggregate)
        parse_byzantine(self.byzantine)

    @property
    def per_round(self) -> int:
        """Clients sampled each round (the expected number under DP's Poisson sampling)."""
        return max(1, round(self.fraction * self.clients))


from ddla.fed.checks import check_fed  # noqa: E402 (re-exported: ddla.config imports it here)

__all__ = ["DP_MODES", "FedConfig", "check_fed"]
