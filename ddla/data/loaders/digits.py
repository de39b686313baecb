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

from pathlib import Path

import numpy as np
import torch

from ddla.data.dataset import Dataset, limit_size, stratified_split

__all__ = ["load_digits"]


def load_digits(
    *,
    root: str | Path | None = None,
    size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Load sklearn's digits; ``root`` and ``cache_dir`` are unused (sklearn ships the data)."""
    from sklearn.datasets import load_digits as sk_load_digits  # heavy import, only when used

    bunch = sk_load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test = stratified_split(y, test_fraction=0.2, seed=seed)
    ds = Dataset(
        name="digits",
        x_train=torch.from_numpy(x[train]),
        y_train=torch.from_numpy(y[train]),
        x_test=torch.from_numpy(x[test]),
        y_test=torch.from_numpy(y[test]),
        classes=tuple(str(c) for c in bunch.target_names),
    )
    return limit_size(ds, size, seed)
