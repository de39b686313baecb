"""MNIST-1D (Greydanus & Kobak 2024, arXiv 2011.14439), generated locally and cached.

The 1-D signals are generated with ``mnist1d.data.make_dataset`` and the package's published
arguments (only ``num_samples`` and ``seed`` change), so the arrays keep the published
preprocessing: 40 points per signal, centred to mean 0 and scaled to standard deviation 1 over
the whole set, split 80/20 by the generator. ``get_dataset`` is never called: it downloads.

Generating 5000 samples takes a few seconds, so the result is cached as ``.npz`` in
``cache_dir`` (default ``$DDLA_CACHE`` or ``~/.cache/ddla``), one file per (size, seed), written
to a temporary file and moved into place with :func:`os.replace` so that agents generating at
the same time never read a half-written cache.

Example:
    >>> import tempfile
    >>> ds = load_mnist1d(size=200, cache_dir=tempfile.mkdtemp())
    >>> ds.input_shape, len(ds.y_train), len(ds.y_test)
    ((40,), 160, 40)
"""

from __future__ import annotations

import os
import random
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from ddla.data.dataset import Dataset
from ddla.errors import ConfigError

__all__ = ["DEFAULT_SIZE", "default_cache_dir", "load_mnist1d", "mnist1d_cache_path"]

DEFAULT_SIZE = 5000
# Bump when the cached content changes meaning, so stale files are not reused.
_CACHE_VERSION = 1
_ARRAYS = ("x", "y", "x_test", "y_test")


def default_cache_dir() -> Path:
    """``$DDLA_CACHE`` if set, else ``~/.cache/ddla``."""
    env = os.environ.get("DDLA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ddla"


def mnist1d_cache_path(cache_dir: str | Path | None, size: int, seed: int) -> Path:
    """Where the generated arrays for ``(size, seed)`` are cached."""
    base = default_cache_dir() if cache_dir is None else Path(cache_dir)
    return base / f"mnist1d-v{_CACHE_VERSION}-n{size}-seed{seed}.npz"


def _generate(size: int, seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset  # imports matplotlib: only when used

    args = get_dataset_args()
    args.num_samples = size
    args.seed = seed
    # make_dataset seeds numpy's and Python's global generators; restore them so loading data
    # does not silently change the random stream of the caller (e.g. model initialisation).
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x": np.asarray(data["x"], dtype=np.float32),
        "y": np.asarray(data["y"], dtype=np.int64),
        "x_test": np.asarray(data["x_test"], dtype=np.float32),
        "y_test": np.asarray(data["y_test"], dtype=np.int64),
    }


def _write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in _ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        # The cache is derived data: a damaged file is regenerated, not fatal.
        warnings.warn(f"ignoring unreadable MNIST-1D cache {path}: {exc}", stacklevel=3)
        return None


def load_mnist1d(
    *,
    root: str | Path | None = None,
    size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> Dataset:
    """Generate (or read from cache) ``size`` MNIST-1D samples; ``root`` is unused.

    ``size`` is the total number of samples (default 5000: 4000 train, 1000 test). The
    generator makes ``size // 10`` samples per class, so ``size`` must be at least 20.
    """
    size = DEFAULT_SIZE if size is None else size
    if size < 20:
        raise ConfigError(
            f"mnist1d size must be at least 20 (2 samples per class), got {size}",
            help="set data.size to 20 or more, e.g. --set data.size=5000",
        )
    path = mnist1d_cache_path(cache_dir, size, seed)
    arrays = _read_cache(path)
    if arrays is None:
        arrays = _generate(size, seed)
        try:
            _write_atomic(path, arrays)
        except OSError as exc:
            # The cache only saves time; an unwritable cache directory must not stop a run.
            warnings.warn(
                f"could not cache MNIST-1D in {path.parent}: {exc}; set DDLA_CACHE to a "
                "writable directory to avoid regenerating it",
                stacklevel=2,
            )
    return Dataset(
        name="mnist1d",
        x_train=torch.from_numpy(arrays["x"]),
        y_train=torch.from_numpy(arrays["y"]),
        x_test=torch.from_numpy(arrays["x_test"]),
        y_test=torch.from_numpy(arrays["y_test"]),
        classes=tuple(str(d) for d in range(10)),
    )
