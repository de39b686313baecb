"""The in-memory dataset every loader returns, its validation, and deterministic splits.

A :class:`Dataset` is a frozen record of four tensors and the class names. It checks itself when
built, so a loader that returns one has returned consistent data: equal x/y lengths, float32
finite inputs with one sample shape, int64 labels inside ``[0, num_classes)``.

Example:
    >>> import torch
    >>> ds = Dataset(
    ...     name="toy",
    ...     x_train=torch.zeros(4, 2), y_train=torch.tensor([0, 1, 0, 1]),
    ...     x_test=torch.zeros(2, 2), y_test=torch.tensor([1, 0]),
    ...     classes=("a", "b"),
    ... )
    >>> ds.num_classes, ds.input_shape
    (2, (2,))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ddla.errors import ConfigError, DataError

__all__ = [
    "Dataset",
    "check_finite",
    "check_labels",
    "check_lengths",
    "limit_size",
    "stratified_split",
    "stratified_take",
]


# eq=False: a generated __eq__ would compare tensors elementwise and raise on bool().
@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test pair of tensors plus class names, validated on construction.

    Example:
        >>> from ddla.data import load_dataset
        >>> ds = load_dataset("digits")
        >>> ds.x_train.dtype, ds.input_shape, ds.num_classes
        (torch.float32, (1, 8, 8), 10)
    """

    name: str
    """Short name, e.g. ``digits`` or the path of a user ``.npz`` file."""
    x_train: torch.Tensor
    """float32, shape ``[N, *input_shape]``."""
    y_train: torch.Tensor
    """int64, shape ``[N]``, values in ``[0, num_classes)``."""
    x_test: torch.Tensor
    """float32, shape ``[M, *input_shape]``."""
    y_test: torch.Tensor
    """int64, shape ``[M]``."""
    classes: tuple[str, ...]
    """Human-readable class names; their count is the number of classes."""

    def __post_init__(self) -> None:
        if len(self.classes) < 1:
            raise DataError(
                f"dataset {self.name!r} has no classes", help="give at least one class name"
            )
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            where = f"dataset {self.name!r} ({split})"
            if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
                raise DataError(
                    f"{where}: x and y must be torch tensors, got {type(x).__name__} and "
                    f"{type(y).__name__}",
                    help="wrap numpy arrays with torch.from_numpy",
                )
            if x.dtype != torch.float32 or y.dtype != torch.int64:
                # Loaders convert; a wrong dtype here is a loader bug, still worth one clear line.
                raise DataError(
                    f"{where}: x must be float32 and y int64, got {x.dtype} and {y.dtype}",
                    help="convert with x.float() and y.long() before building a Dataset",
                )
            if y.ndim != 1 or x.ndim < 2:
                raise DataError(
                    f"{where}: x must be [N, ...] and y [N], got shapes "
                    f"{tuple(x.shape)} and {tuple(y.shape)}",
                    help="store one sample per row of x and one label per entry of y",
                )
            check_lengths(x, y, where=where)
            check_finite(x, where=where)
            check_labels(y, len(self.classes), where=where)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"dataset {self.name!r}: train samples have shape {tuple(self.x_train.shape[1:])} "
                f"but test samples {tuple(self.x_test.shape[1:])}",
                help="train and test inputs must share one sample shape",
            )

    @classmethod
    def unchecked(cls, **fields: object) -> Dataset:
        """Build without validation: only for data validated before (the decoded cache).

        Validation reads every value (the NaN check), which would make a memory-mapped
        dataset fully resident in every agent; cached arrays were checked when written.
        """
        ds = object.__new__(cls)
        for key, value in fields.items():
            object.__setattr__(ds, key, value)
        return ds

    @property
    def num_classes(self) -> int:
        """Number of classes (the length of :attr:`classes`)."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(1, 28, 28)``."""
        return tuple(self.x_train.shape[1:])


def check_lengths(
    x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, *, where: str
) -> None:
    """Raise DataError unless ``x`` and ``y`` hold the same, non-zero number of samples."""
    if len(x) != len(y):
        raise DataError(
            f"{where}: {len(x)} inputs but {len(y)} labels",
            help="x and y must have the same first dimension",
        )
    if len(x) == 0:
        raise DataError(f"{where}: no samples", help="a dataset split needs at least one sample")


def check_finite(x: torch.Tensor | np.ndarray, *, where: str) -> None:
    """Raise DataError if ``x`` holds NaN or infinite values, saying how many."""
    t = torch.as_tensor(x)
    # Fast path: any NaN/inf makes the sum non-finite, and one reduction is several times
    # cheaper than an elementwise mask on Fashion-MNIST (47M values). A float64 sum of float32
    # values cannot overflow; if a float64 input does, we merely take the exact path below.
    if t.is_floating_point() and not torch.isfinite(t.sum(dtype=torch.float64)):
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise DataError(
                f"{where}: {bad} input values are NaN or infinite",
                help="clean or impute the inputs before training",
            )


def check_labels(y: torch.Tensor | np.ndarray, num_classes: int, *, where: str) -> None:
    """Raise DataError unless every label is an integer in ``[0, num_classes)``."""
    t = torch.as_tensor(y)
    if t.numel() == 0:
        return
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(
            f"{where}: labels must lie in [0, {num_classes}), found range [{lo}, {hi}]",
            help="labels are class indices 0..num_classes-1; check the labels or the class list",
        )


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer counts proportional to ``weights`` summing exactly to ``total``.

    Hamilton's method: floor the quotas, then give the leftover units to the largest
    fractional parts (ties to the lower index, so the result is deterministic).
    """
    quotas = weights / weights.sum() * total
    counts = np.floor(quotas).astype(np.int64)
    leftover = int(total - counts.sum())
    if leftover:
        order = np.argsort(-(quotas - counts), kind="stable")
        counts[order[:leftover]] += 1
    return counts


def stratified_take(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` samples drawn per class in proportion to the class sizes.

    Deterministic for a seed; the class mix of the result matches the whole within one sample
    per class.

    Example:
        >>> y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
        >>> np.bincount(y[stratified_take(y, 4, seed=0)]).tolist()
        [2, 2]
    """
    labels = np.asarray(labels)
    classes, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    quotas = _largest_remainder(sizes.astype(np.float64), n)
    rng = np.random.default_rng(seed)
    picked = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        picked.append(members[rng.permutation(len(members))[: quotas[c]]])
    return np.sort(np.concatenate(picked))


def stratified_split(
    labels: np.ndarray, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/test split: ``(train_idx, test_idx)``, both sorted.

    Example:
        >>> y = np.repeat(np.arange(2), 10)
        >>> train, test = stratified_split(y, seed=1)
        >>> len(train), len(test), np.bincount(y[test]).tolist()
        (16, 4, [2, 2])
    """
    n = len(labels)
    n_test = round(n * test_fraction)
    if n_test < 1 or n_test >= n:
        raise DataError(
            f"cannot split {n} samples into train and test at test fraction {test_fraction}",
            help="provide at least 5 samples, or give x_train/y_train/x_test/y_test explicitly",
        )
    test = stratified_take(labels, n_test, seed)
    train = np.setdiff1d(np.arange(n), test, assume_unique=True)
    return train, test


def limit_size(ds: Dataset, size: int | None, seed: int) -> Dataset:
    """Keep ``size`` samples in total (train + test, in the dataset's own ratio), stratified.

    ``None`` keeps everything. Used by loaders whose data has a fixed size, so that
    ``--set data.size=N`` means the same thing for every dataset.
    """
    if size is None:
        return ds
    n_train, n_test = len(ds.y_train), len(ds.y_test)
    total = n_train + n_test
    if not 2 <= size <= total:
        raise ConfigError(
            f"data size {size} is out of range for {ds.name!r}, which has {total} samples",
            help=f"choose a size between 2 and {total}, or leave it unset to use all samples",
        )
    keep_test = min(max(1, round(size * n_test / total)), size - 1)
    tr = torch.from_numpy(stratified_take(ds.y_train.numpy(), size - keep_test, seed))
    te = torch.from_numpy(stratified_take(ds.y_test.numpy(), keep_test, seed + 1))
    return Dataset(
        name=ds.name,
        x_train=ds.x_train[tr],
        y_train=ds.y_train[tr],
        x_test=ds.x_test[te],
        y_test=ds.y_test[te],
        classes=ds.classes,
    )
