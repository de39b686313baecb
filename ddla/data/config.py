"""Configuration of the data each agent trains on (``data.*``)."""

from __future__ import annotations

from dataclasses import dataclass

from ddla.choices import check_choices, choice
from ddla.errors import ConfigError


def _datasets() -> list[str]:
    from ddla.data import DATASETS  # late: the package imports this module

    return sorted(DATASETS)


def _is_npz(name: str) -> bool:
    return name.startswith("npz:") or name.endswith(".npz")


@dataclass(kw_only=True, slots=True)
class DataConfig:
    """Dataset, its split across agents, and the per-agent batch size.

    Example:
        >>> DataConfig(dataset="digits", partition="dirichlet:0.5").batch_size
        32
    """

    dataset: str = choice("mnist1d", _datasets, noun="dataset", also=("npz:PATH", _is_npz))
    """``digits``, ``mnist1d``, ``fashion-mnist``, or ``npz:PATH`` / ``PATH.npz`` for your own."""
    root: str | None = None
    """Directory of the dataset files (Fashion-MNIST IDX); None uses the default location."""
    size: int | None = None
    """Number of samples to generate (MNIST-1D only; train + test, default 5000)."""
    partition: str = "iid"
    """How samples are split: ``iid``, ``dirichlet:ALPHA``, ``shards:K``, ``quantity:ALPHA``."""
    batch_size: int = 32
    """Samples per agent per step."""
    share: str = "none"
    """Data shared before training: ``none`` or ``shared:FRACTION`` (each agent gives that
    fraction of its shard to a pool replicated to all; needs ``security.enabled``)."""
    pull_every: int = 0
    """Every N steps each agent pulls samples of the classes it lacks from its peers, as the
    owners' ``security.policy`` allows (0 = never; needs ``security.enabled``)."""
    pull_count: int = 32
    """Samples an agent asks of each peer per pull round."""
    cache_dir: str | None = None
    """Where generated datasets are cached (default ``$DDLA_CACHE`` or ``~/.cache/ddla``)."""

    def __post_init__(self) -> None:
        from ddla.data import parse_partition

        check_choices(self, "data")
        parse_partition(self.partition)
        from ddla.data.sharing import parse_share

        parse_share(self.share)
        if self.pull_every < 0 or self.pull_count < 1:
            raise ConfigError(
                f"data.pull_every must be >= 0 and data.pull_count >= 1, got "
                f"{self.pull_every} and {self.pull_count}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.size is not None and self.size < 10:
            raise ConfigError(f"data.size must be >= 10, got {self.size}")
