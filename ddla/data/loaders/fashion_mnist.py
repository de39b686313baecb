"""Fashion-MNIST (Xiao et al. 2017, arXiv 1708.07747) from its standard IDX files.

Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` (each plain or ``.gz``) from a directory; the Debian package
``dataset-fashion-mnist`` installs them in :data:`DEFAULT_ROOT`. Pixels are scaled to [0, 1].

Example:
    >>> ds = load_fashion_mnist(size=700)  # doctest: +SKIP
    >>> ds.input_shape, ds.classes[0]  # doctest: +SKIP
    ((1, 28, 28), 'T-shirt/top')
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ddla.data.cache import cached_arrays
from ddla.data.dataset import Dataset, check_finite, limit_size
from ddla.data.idx import read_idx
from ddla.errors import DataError

__all__ = ["DEFAULT_ROOT", "FASHION_MNIST_CLASSES", "load_fashion_mnist"]

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_MISSING_HELP = "install the Debian package dataset-fashion-mnist or pass --set data.root=DIR"


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"Fashion-MNIST file {stem}[.gz] not found in {root}", help=_MISSING_HELP)


def _read_split(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find(root, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"{images_path} holds {images.dtype} images of shape {images.shape[1:]}, "
            "expected uint8 28x28",
            help=_MISSING_HELP,
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels",
            help=_MISSING_HELP,
        )
    if labels.size and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(
            f"{labels_path} has label {int(labels.max())}, expected 0..9", help=_MISSING_HELP
        )
    x = images.astype(np.float32).reshape(-1, 1, 28, 28)
    np.divide(x, 255.0, out=x)  # in place: one 188 MB float array, not two
    return x, labels.astype(np.int64)


def _decode(root: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    x_train, y_train = _read_split(root, "train")
    x_test, y_test = _read_split(root, "t10k")
    check_finite(x_train, where="fashion-mnist (train)")  # always true for scaled uint8
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return arrays, {"classes": list(FASHION_MNIST_CLASSES)}


def load_fashion_mnist(
    *,
    root: str | Path | None = None,
    size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> Dataset:
    """Load Fashion-MNIST from ``root`` (default :data:`DEFAULT_ROOT`).

    ``size`` keeps that many samples in total, stratified, in the 6:1 train/test ratio.
    With ``cache`` the decoded arrays are kept memory-mapped under ``cache_dir``
    (:mod:`ddla.data.cache`), keyed by the IDX files' SHA-256: decoded once per machine.
    """
    root = DEFAULT_ROOT if root is None else Path(root)
    if not root.is_dir():
        raise DataError(f"Fashion-MNIST directory {root} does not exist", help=_MISSING_HELP)
    if cache:
        sources = [
            _find(root, f"{prefix}-{kind}-idx{n}-ubyte")
            for prefix in ("train", "t10k")
            for kind, n in (("images", 3), ("labels", 1))
        ]
        arrays, _ = cached_arrays(
            "fashion-mnist", {}, sources, lambda: _decode(root), cache_dir=cache_dir
        )
        tensors = {k: torch.from_numpy(a) for k, a in arrays.items()}
        # Validated when decoded; checking again would read all 188 MB in every agent.
        ds = Dataset.unchecked(name="fashion-mnist", classes=FASHION_MNIST_CLASSES, **tensors)
    else:
        arrays, _ = _decode(root)
        ds = Dataset(
            name="fashion-mnist",
            classes=FASHION_MNIST_CLASSES,
            **{k: torch.from_numpy(a) for k, a in arrays.items()},
        )
    return limit_size(ds, size, seed)
