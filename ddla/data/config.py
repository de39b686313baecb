"""Configuration of the data each agent trains on (``data.*``)."""

from __future__ import annotations

from dataclasses import dataclass

from ddla.choices import check_choices, choice
from ddla.errors import ConfigError


def _datasets() -> list[str]:
    from ddla.data.loaders import DATASETS, TEXT_DATASETS  # late: the package imports us

    return sorted([*DATASETS, *TEXT_DATASETS])


def _is_path(name: str) -> bool:
    return name.startswith(("npz:", "text:")) or name.endswith(".npz")


@dataclass(kw_only=True, slots=True)
class DataConfig:
    """Dataset, its split across agents, and the per-agent batch size.

    Example:
        >>> DataConfig(dataset="digits", partition="dirichlet:0.5").batch_size
        32
    """

    dataset: str = choice(
        "mnist1d", _datasets, noun="dataset", also=("npz:PATH, PATH.npz or text:PATH", _is_path)
    )
    """``digits``, ``mnist1d``, ``fashion-mnist``, or ``npz:PATH`` / ``PATH.npz`` for your own;
    text for language models: ``python-stdlib`` (built in) or ``text:PATH`` (file or directory)."""
    source: str | None = None
    """Data that lives at each agent, read by that agent only (nothing is partitioned):
    ``npz:/data/site-{rank}.npz`` (``{rank}``, ``{node}``, ``{local_rank}``), a comma list
    of one ``.npz`` per agent, or a directory of them. ``dataset`` is then unused."""
    test_source: str | None = None
    """With ``source``: per-site test files (same forms) replacing each file's test split,
    or one file, the shared test set of the global figure."""
    root: str | None = None
    """Directory of the dataset files (Fashion-MNIST IDX); None uses the default location."""
    size: int | None = None
    """Number of samples to generate (MNIST-1D only; train + test, default 5000)."""
    partition: str = "auto"
    """How samples are split: ``iid``, ``dirichlet:ALPHA``, ``shards:K``, ``quantity:ALPHA``,
    ``contiguous`` (stored order, whole documents of a text corpus per agent); ``auto`` is the
    dataset's natural split: ``iid`` for labelled samples, ``contiguous`` for text."""
    context: int = 128
    """Tokens per sample of a text dataset (the language model's context length)."""
    batch_size: int = 32
    """Samples per agent per step."""
    share: str = "none"
    """Data shared before training: ``none``, ``shared:FRACTION`` (each agent gives that
    fraction of its shard to a pool replicated to all; needs ``security.enabled``) or
    ``features:FRACTION`` (the same pool of the Job's extracted features, never raw samples;
    the owners' policy must grant kind ``features``)."""
    preprocess: str = "none"
    """Transform fitted on all agents' shards from moments only: ``none``, ``standardize``,
    ``minmax``, ``pca:K`` or ``pca:K:whiten`` (saved with the model; ``ddla eval`` applies it)."""
    pull_every: int = 0
    """Every N steps each agent pulls samples of the classes it lacks from its peers, as the
    owners' ``security.policy`` allows (0 = never; needs ``security.enabled``)."""
    pull_count: int = 32
    """Samples an agent asks of each peer per pull round."""
    cache_dir: str | None = None
    """Where generated datasets are cached (default ``$DDLA_CACHE`` or ``~/.cache/ddla``)."""
    cache: bool = True
    """Decode built-in datasets once into memory-mapped ``.npy`` files under ``cache_dir``,
    shared by the launcher's preflight and every agent (``false``: decode in each process)."""

    def __post_init__(self) -> None:
        from ddla.data import parse_partition

        check_choices(self, "data")
        if self.partition != "auto":
            parse_partition(self.partition)
        if self.context < 2:
            raise ConfigError(f"data.context must be >= 2, got {self.context}")
        if self.test_source is not None and self.source is None:
            raise ConfigError(
                "data.test_source needs data.source",
                help="set data.source to the per-agent training files too",
            )
        if self.source is not None:
            from ddla.data.sources import check_source_spec

            check_source_spec(self.source)
            if self.test_source is not None:
                check_source_spec(self.test_source, key="data.test_source")
            if self.share != "none" or self.pull_every:
                raise ConfigError(
                    "data.share and data.pull_every work on one partitioned dataset, not with "
                    "data.source",
                    help="unset data.source, or data.share/data.pull_every",
                )
        from ddla.data.sharing import parse_share

        parse_share(self.share)
        from ddla.data.preprocess import parse_preprocess

        parse_preprocess(self.preprocess)
        if self.pull_every < 0 or self.pull_count < 1:
            raise ConfigError(
                f"data.pull_every must be >= 0 and data.pull_count >= 1, got "
                f"{self.pull_every} and {self.pull_count}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.batch_size}")
        if self.size is not None and self.size < 10:
            raise ConfigError(f"data.size must be >= 10, got {self.size}")
