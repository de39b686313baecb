"""The UCI optical digits (8x8 images, 10 classes, 1797 samples) shipped with scikit-learn.

No download: the data lives inside the scikit-learn package, so it is the dataset for quick
runs and tests. Pixels are scaled from 0..16 to [0, 1]; the 80/20 split is stratified and fixed
by the seed.

Example:
    >>> ds = load_digits()
    >>> ds.input_shape, len(ds.y_train), len(ds.y_test)
    ((1, 8, 8), 1438, 359)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ddla.data.cache import cached_arrays
from ddla.data.dataset import Dataset, limit_size, stratified_split

__all__ = ["load_digits"]


def _source() -> Path | None:
    """sklearn's ``digits.csv.gz``, found without importing sklearn (1 s of imports)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/digits.csv.gz"
    return path if path.is_file() else None


def _decode() -> tuple[dict[str, np.ndarray], dict[str, object]]:
    from sklearn.datasets import load_digits as sk_load_digits  # heavy import, only when used

    bunch = sk_load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    return {"x": x, "y": y}, {"classes": [str(c) for c in bunch.target_names]}


def load_digits(
    *,
    root: str | Path | None = None,
    size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> Dataset:
    """Load sklearn's digits; ``root`` is unused (sklearn ships the data).

    With ``cache`` the decoded arrays are memory-mapped from ``cache_dir``
    (:mod:`ddla.data.cache`), so agents skip importing scikit-learn.
    """
    source = _source() if cache else None
    if source is not None:
        arrays, meta = cached_arrays("digits", {}, [source], _decode, cache_dir=cache_dir)
    else:
        arrays, meta = _decode()
    x, y = arrays["x"], arrays["y"]
    train, test = stratified_split(y, test_fraction=0.2, seed=seed)
    ds = Dataset(
        name="digits",
        x_train=torch.from_numpy(np.ascontiguousarray(x[train])),
        y_train=torch.from_numpy(np.ascontiguousarray(y[train])),
        x_test=torch.from_numpy(np.ascontiguousarray(x[test])),
        y_test=torch.from_numpy(np.ascontiguousarray(y[test])),
        classes=tuple(meta["classes"]),
    )
    return limit_size(ds, size, seed)
