"""A user dataset from one ``.npz`` file.

The file holds either ``x`` and ``y`` (split 80/20, stratified, by the seed) or ``x_train``,
``y_train``, ``x_test`` and ``y_test``; optionally ``classes`` (an array of names). ``x`` is any
numeric array ``[N, ...]``; ``y`` holds integer class indices (integer-valued floats are
accepted). Without ``classes`` the names are ``"0" .. str(max label)``. The file is read with
``allow_pickle=False``: object arrays (ragged data) are refused rather than unpickled.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "toy.npz"
    >>> np.savez(path, x=np.random.rand(10, 3), y=np.arange(10) % 2)
    >>> ds = load_npz(path)
    >>> ds.input_shape, len(ds.y_train), ds.classes
    ((3,), 8, ('0', '1'))
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ddla.data.dataset import Dataset, check_finite, limit_size, stratified_split
from ddla.errors import DataError

__all__ = ["load_npz"]

_HELP = (
    "an .npz dataset needs numeric arrays x,y or x_train,y_train,x_test,y_test "
    "(optionally classes); labels are integers 0..num_classes-1"
)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"dataset file {path} does not exist", help="check the path after npz:")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # np.load would try it as a pickle and blame object arrays
        raise DataError(
            f"{path}: not an .npz file (an .npz is a zip archive of arrays)",
            help="write it with numpy.savez(path, x=..., y=...) or numpy.savez_compressed",
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            # Read every member now: np.load is lazy, and a truncated member only fails on access.
            return {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickled" in str(exc):
            raise DataError(
                f"{path}: holds object arrays (ragged or non-numeric data), which are not loaded",
                help="store rectangular numeric arrays, e.g. np.stack your samples",
            ) from exc
        raise DataError(f"{path}: not a readable .npz file ({exc})", help=_HELP) from exc
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated .npz file ({exc})", help=_HELP) from exc


def _inputs(path: Path, key: str, a: np.ndarray) -> np.ndarray:
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise DataError(f"{path}: array {key!r} has non-numeric dtype {a.dtype}", help=_HELP)
    if a.ndim < 2:
        raise DataError(
            f"{path}: array {key!r} must be [N, features...], got shape {a.shape}",
            help="reshape x to one row per sample, e.g. x.reshape(len(x), -1)",
        )
    x = a.astype(np.float32, copy=False)  # a float32 file: no second copy of the data
    check_finite(x, where=f"{path}: array {key!r}")
    return x


def _labels(path: Path, key: str, a: np.ndarray) -> np.ndarray:
    where = f"{path}: array {key!r}"
    if a.ndim != 1:
        raise DataError(f"{where} must be 1-D labels, got shape {a.shape}", help=_HELP)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise DataError(f"{where} has non-integer labels", help=_HELP)
    elif not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{where} has non-numeric dtype {a.dtype}", help=_HELP)
    y = a.astype(np.int64)
    if y.size and y.min() < 0:
        raise DataError(f"{where} has negative label {int(y.min())}", help=_HELP)
    return y


def _classes(path: Path, arrays: dict[str, np.ndarray], max_label: int) -> tuple[str, ...]:
    if "classes" not in arrays:
        return tuple(str(c) for c in range(max_label + 1))
    names = arrays["classes"]
    if names.ndim != 1 or names.size == 0:
        raise DataError(f"{path}: 'classes' must be a non-empty 1-D array of names", help=_HELP)
    classes = tuple(str(c) for c in names.tolist())
    if max_label >= len(classes):
        raise DataError(
            f"{path}: label {max_label} is out of range for the {len(classes)} classes given",
            help="labels index into 'classes'; add the missing names or fix the labels",
        )
    return classes


def _check_pair(path: Path, xk: str, x: np.ndarray, yk: str, y: np.ndarray) -> None:
    if len(x) != len(y):
        raise DataError(f"{path}: {xk!r} has {len(x)} samples but {yk!r} has {len(y)}", help=_HELP)


def load_npz(
    path: str | Path,
    *,
    root: str | Path | None = None,
    size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    cache: bool = True,
) -> Dataset:
    """Load a user ``.npz`` dataset; a relative ``path`` is taken relative to ``root`` if given.

    Raises:
        DataError: naming the file and the problem (missing file or key, object/ragged or
            non-numeric arrays, NaN/inf inputs, negative, non-integer or out-of-range labels,
            corrupt or truncated file).
    """
    path = Path(path)
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    arrays = _read_arrays(path)
    if {"x_train", "y_train", "x_test", "y_test"} <= arrays.keys():
        x_train = _inputs(path, "x_train", arrays["x_train"])
        y_train = _labels(path, "y_train", arrays["y_train"])
        x_test = _inputs(path, "x_test", arrays["x_test"])
        y_test = _labels(path, "y_test", arrays["y_test"])
        _check_pair(path, "x_train", x_train, "y_train", y_train)
        _check_pair(path, "x_test", x_test, "y_test", y_test)
    elif {"x", "y"} <= arrays.keys():
        x = _inputs(path, "x", arrays["x"])
        y = _labels(path, "y", arrays["y"])
        _check_pair(path, "x", x, "y", y)
        train, test = stratified_split(y, test_fraction=0.2, seed=seed)
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    else:
        raise DataError(
            f"{path}: missing arrays; found {sorted(arrays) or 'none'}, "
            "need x,y or x_train,y_train,x_test,y_test",
            help=_HELP,
        )
    if len(y_train) == 0 or len(y_test) == 0:
        raise DataError(f"{path}: the train and test splits must not be empty", help=_HELP)
    max_label = int(max(y_train.max(), y_test.max()))
    ds = Dataset(
        name=str(path),
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y_train),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y_test),
        classes=_classes(path, arrays, max_label),
    )
    return limit_size(ds, size, seed)
