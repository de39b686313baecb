"""The dataset registry and :func:`load_dataset`, the one way ddla loads data.

Every loader takes the same keyword arguments ``(root, size, seed, cache_dir)`` and returns a
validated :class:`~ddla.data.dataset.Dataset`. A user file is named ``npz:PATH`` or any name
ending in ``.npz``.

Example:
    >>> ds = load_dataset("digits", size=500, seed=1)
    >>> len(ds.y_train) + len(ds.y_test), ds.num_classes
    (500, 10)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ddla.data.dataset import Dataset
from ddla.data.loaders.digits import load_digits
from ddla.data.loaders.fashion_mnist import load_fashion_mnist
from ddla.data.loaders.mnist1d import load_mnist1d
from ddla.data.loaders.npz import load_npz
from ddla.errors import ConfigError

__all__ = ["DATASETS", "NPZ_PREFIX", "dataset_names", "load_dataset"]

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "mnist1d": load_mnist1d,
}
"""Built-in datasets by name; each loader takes ``root, size, seed, cache_dir, cache`` keywords."""

NPZ_PREFIX = "npz:"


def dataset_names() -> list[str]:
    """The names :func:`load_dataset` accepts, as shown in error messages."""
    return [*sorted(DATASETS), f"{NPZ_PREFIX}PATH", "PATH.npz"]


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> Dataset:
    """Load a dataset by name.

    Args:
        name: ``digits``, ``mnist1d``, ``fashion-mnist``, ``npz:PATH`` or ``PATH.npz``.
        root: directory holding the files (Fashion-MNIST; base of a relative npz path).
        size: total samples to keep (train + test), stratified; for ``mnist1d`` the number
            generated (default 5000). ``None`` keeps all.
        seed: fixes the train/test split, the subsample and the MNIST-1D generator.
        cache_dir: where generated data is cached (default ``$DDLA_CACHE`` or ``~/.cache/ddla``).
        cache: keep decoded built-in datasets memory-mapped under ``cache_dir``
            (:mod:`ddla.data.cache`); ``False`` decodes in this process every time.

    Raises:
        ConfigError: unknown name (the message lists the allowed names), or size out of range.
        DataError: the data is missing or malformed.
    """
    if not isinstance(name, str):
        raise ConfigError(
            f"dataset name must be a string, got {name!r}",
            help=f"set data.name to one of: {', '.join(dataset_names())}",
        )
    kwargs = {"root": root, "size": size, "seed": seed, "cache_dir": cache_dir, "cache": cache}
    if name.startswith(NPZ_PREFIX):
        return load_npz(name[len(NPZ_PREFIX) :], **kwargs)
    if name.endswith(".npz"):
        return load_npz(name, **kwargs)
    loader = DATASETS.get(name)
    if loader is None:
        allowed = ", ".join(dataset_names())
        raise ConfigError(
            f"unknown dataset {name!r}; allowed: {allowed}",
            help=f"set data.name to one of: {allowed}",
        )
    return loader(**kwargs)
