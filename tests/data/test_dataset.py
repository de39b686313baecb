"""Dataset validation and the deterministic split/subsample helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddla.data.dataset import Dataset, limit_size, stratified_split, stratified_take
from ddla.errors import ConfigError, DataError


def make(**overrides) -> Dataset:
    fields = dict(
        name="toy",
        x_train=torch.zeros(6, 3),
        y_train=torch.tensor([0, 1, 2, 0, 1, 2]),
        x_test=torch.zeros(3, 3),
        y_test=torch.tensor([2, 1, 0]),
        classes=("a", "b", "c"),
    )
    fields.update(overrides)
    return Dataset(**fields)


def test_valid_dataset_reports_classes_and_shape():
    ds = make()
    assert ds.num_classes == 3
    assert ds.input_shape == (3,)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"y_train": torch.tensor([0, 1, 2, 0, 1])}, "6 inputs but 5 labels"),
        ({"x_train": torch.full((6, 3), float("nan"))}, "18 input values are NaN"),
        ({"x_test": torch.tensor([[0.0, float("inf"), 0.0]] * 3)}, "3 input values are NaN"),
        ({"y_test": torch.tensor([2, 3, 0])}, "labels must lie in [0, 3), found range [0, 3]"),
        ({"y_train": torch.tensor([0, -1, 2, 0, 1, 2])}, "found range [-1, 2]"),
        ({"x_train": torch.zeros(6, 3, dtype=torch.float64)}, "x must be float32"),
        ({"y_train": torch.zeros(6, dtype=torch.int32)}, "y int64"),
        ({"x_test": torch.zeros(3, 4)}, "train samples have shape (3,) but test samples (4,)"),
        (
            {"x_train": torch.zeros(0, 3), "y_train": torch.zeros(0, dtype=torch.int64)},
            "no samples",
        ),
        ({"classes": ()}, "has no classes"),
        ({"x_train": np.zeros((6, 3), dtype=np.float32)}, "must be torch tensors, got ndarray"),
    ],
)
def test_invalid_dataset_raises_data_error_with_help(overrides, message):
    with pytest.raises(DataError) as info:
        make(**overrides)
    assert message in str(info.value)
    assert info.value.help


def test_datasets_compare_by_identity_not_elementwise():
    a = make()
    assert a == a and a != make()


def test_stratified_split_is_disjoint_covering_stratified_and_seeded():
    y = np.repeat(np.arange(3), [50, 30, 20])
    train, test = stratified_split(y, test_fraction=0.2, seed=0)
    assert len(test) == 20 and len(train) == 80
    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    assert np.bincount(y[test]).tolist() == [10, 6, 4]
    again, _ = stratified_split(y, test_fraction=0.2, seed=0)
    other, _ = stratified_split(y, test_fraction=0.2, seed=1)
    assert np.array_equal(train, again)
    assert not np.array_equal(train, other)


def test_stratified_split_refuses_too_few_samples():
    with pytest.raises(DataError, match="cannot split 2 samples"):
        stratified_split(np.array([0, 1]), seed=0)


def test_stratified_take_hits_exact_total():
    y = np.repeat(np.arange(3), [7, 7, 7])
    picked = stratified_take(y, 10, seed=3)
    assert len(picked) == 10 and len(np.unique(picked)) == 10
    assert sorted(np.bincount(y[picked]).tolist()) == [3, 3, 4]


def test_limit_size_keeps_total_and_ratio():
    ds = make(
        x_train=torch.zeros(80, 2),
        y_train=torch.arange(80) % 4,
        x_test=torch.zeros(20, 2),
        y_test=torch.arange(20) % 4,
        classes=("a", "b", "c", "d"),
    )
    small = limit_size(ds, 50, seed=0)
    assert (len(small.y_train), len(small.y_test)) == (40, 10)
    assert limit_size(ds, None, seed=0) is ds
    for bad in (1, 101):
        with pytest.raises(ConfigError, match="out of range"):
            limit_size(ds, bad, seed=0)
