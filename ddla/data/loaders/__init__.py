"""The dataset registry and :func:`load_dataset`, the one way ddla loads data.

Every loader takes the same keyword arguments ``(root, size, seed, cache_dir)`` and returns a
validated :class:`~ddla.data.dataset.Dataset`. A user file is named ``npz:PATH`` or any name
ending in ``.npz``. Text corpora (``text:PATH`` and the built-in ``python-stdlib``) return a
:class:`~ddla.data.loaders.text.TextDataset` of byte-token windows of ``context`` tokens.

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
from ddla.data.loaders.text import TEXT_PREFIX, TextDataset, load_python_stdlib, load_text
from ddla.errors import ConfigError

__all__ = [
    "DATASETS",
    "NPZ_PREFIX",
    "TEXT_DATASETS",
    "TEXT_PREFIX",
    "dataset_names",
    "is_known_dataset",
    "load_dataset",
]

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "mnist1d": load_mnist1d,
}
"""Built-in datasets by name; each loader takes ``root, size, seed, cache_dir, cache`` keywords."""

TEXT_DATASETS: dict[str, Callable[..., TextDataset]] = {"python-stdlib": load_python_stdlib}
"""Built-in text corpora; their loaders also take ``context`` (tokens per sample)."""

NPZ_PREFIX = "npz:"


def is_known_dataset(name: str) -> bool:
    """True for a built-in name or a ``npz:``/``.npz``/``text:`` user path (not yet checked)."""
    return (
        name in DATASETS
        or name in TEXT_DATASETS
        or name.startswith((NPZ_PREFIX, TEXT_PREFIX))
        or name.endswith(".npz")
    )


def dataset_names() -> list[str]:
    """The names :func:`load_dataset` accepts, as shown in error messages."""
    return [
        *sorted([*DATASETS, *TEXT_DATASETS]),
        f"{NPZ_PREFIX}PATH",
        "PATH.npz",
        f"{TEXT_PREFIX}PATH",
    ]


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    cache: bool = True,
    context: int = 128,
) -> Dataset | TextDataset:
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
        context: tokens per sample of a text corpus (ignored by the others).

    Raises:
        ConfigError: unknown name (the message lists the allowed names), or size out of range.
        DataError: the data is missing or malformed.
    """
    if not isinstance(name, str):
        raise ConfigError(
            f"dataset name must be a string, got {name!r}",
            help=f"set data.name to one of: {', '.join(dataset_names())}",
        )
    kwargs = {"root": root, "size": size, "seed": seed, "cache_dir": cache_dir}
    if name.startswith(TEXT_PREFIX):
        return load_text(name[len(TEXT_PREFIX) :], context=context, **kwargs)
    if name in TEXT_DATASETS:
        return TEXT_DATASETS[name](context=context, **kwargs)
    kwargs["cache"] = cache
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
