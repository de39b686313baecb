"""Configuration of the synchronization strategy (``sync.*`` in a run file or ``--set``)."""

from __future__ import annotations

from dataclasses import dataclass

from ddla.errors import ConfigError


@dataclass(kw_only=True, slots=True)
class SyncConfig:
    """How agents keep their models in agreement.

    Example:
        >>> SyncConfig(strategy="allreduce").strategy
        'allreduce'
    """

    strategy: str = "allreduce"
    """Name of the strategy; one of ``ddla.sync.STRATEGIES``."""
    every: int = 1
    """Synchronize every H optimizer steps (periodic strategies; ``allreduce`` syncs every step)."""
    compress: str = "none"
    """Compressor applied to what is exchanged (``none`` sends fp32)."""

    def __post_init__(self) -> None:
        from ddla.sync import STRATEGIES

        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"sync.strategy: unknown strategy {self.strategy!r}",
                help=f"choose one of: {', '.join(sorted(STRATEGIES))}",
            )
        if self.every < 1:
            raise ConfigError(
                f"sync.every must be >= 1, got {self.every}",
                help="sync.every is the number of local steps between synchronizations",
            )
