"""Loaders on the real data (digits, MNIST-1D, Fashion-MNIST) and user .npz files."""

from __future__ import annotations

import gzip
import os
import random
import warnings
from pathlib import Path

import mnist1d.data
import numpy as np
import pytest
import torch

from ddla.data import DATASETS, load_dataset
from ddla.data.dataset import limit_size
from ddla.data.loaders import dataset_names
from ddla.data.loaders.fashion_mnist import DEFAULT_ROOT, FASHION_MNIST_CLASSES
from ddla.data.loaders.mnist1d import mnist1d_cache_path
from ddla.errors import ConfigError, DataError

# ---------------------------------------------------------------- digits


def test_digits_shapes_ranges_and_stratified_split():
    ds = load_dataset("digits", seed=0)
    assert ds.name == "digits"
    assert ds.x_train.shape == (1438, 1, 8, 8) and ds.x_test.shape == (359, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    assert ds.num_classes == 10 and ds.classes[0] == "0"
    # stratified: every class is ~20% test
    test_share = ds.y_test.bincount(minlength=10) / (
        ds.y_test.bincount(minlength=10) + ds.y_train.bincount(minlength=10)
    )
    assert torch.all((test_share - 0.2).abs() < 0.02)


def test_digits_split_is_fixed_by_seed():
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    assert torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.x_test, c.x_test)


def test_size_keeps_that_many_samples_stratified():
    ds = load_dataset("digits", size=500, seed=2)
    assert len(ds.y_train) + len(ds.y_test) == 500
    assert len(ds.y_test) == 100
    assert ds.y_train.bincount(minlength=10).min() >= 38


def test_unknown_dataset_names_the_allowed_values():
    with pytest.raises(ConfigError, match="dataset name must be a string"):
        load_dataset(None)
    with pytest.raises(ConfigError) as info:
        load_dataset("cifar10")
    for name in ("digits", "fashion-mnist", "mnist1d", "npz:PATH"):
        assert name in str(info.value)
    assert info.value.help


# ---------------------------------------------------------------- mnist1d


@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory) -> Path:
    """Generate the default 5000-sample MNIST-1D once for this module (a few seconds)."""
    cache = tmp_path_factory.mktemp("ddla-cache")
    load_dataset("mnist1d", seed=0, cache_dir=cache)
    return cache


def test_mnist1d_default_shapes_and_preprocessing(mnist1d_cache):
    ds = load_dataset("mnist1d", seed=0, cache_dir=mnist1d_cache)
    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.input_shape == (40,) and ds.x_train.dtype == torch.float32
    assert ds.num_classes == 10
    assert ds.y_train.bincount(minlength=10).min() > 300
    # published preprocessing: the whole set is centred and scaled to unit std
    whole = torch.cat([ds.x_train, ds.x_test])
    assert abs(float(whole.mean())) < 1e-3 and abs(float(whole.std()) - 1) < 1e-3


def test_mnist1d_cache_is_written_once_and_reused(mnist1d_cache, monkeypatch):
    path = mnist1d_cache_path(mnist1d_cache, 5000, 0)
    assert path.is_file()
    assert not [p for p in mnist1d_cache.iterdir() if p.suffix == ".tmp"]
    mtime = path.stat().st_mtime_ns
    calls = []
    real = mnist1d.data.make_dataset
    monkeypatch.setattr(mnist1d.data, "make_dataset", lambda *a, **k: calls.append(1) or real(*a))
    first = load_dataset("mnist1d", seed=0, cache_dir=mnist1d_cache)
    assert calls == [] and path.stat().st_mtime_ns == mtime
    # a new (size, seed) key does generate, through the same function
    load_dataset("mnist1d", size=100, seed=0, cache_dir=mnist1d_cache)
    assert calls == [1]
    assert first.x_train.shape == (4000, 40)


def test_mnist1d_uses_env_cache_dir_and_preserves_global_rng(tmp_path, monkeypatch):
    monkeypatch.setenv("DDLA_CACHE", str(tmp_path))
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    ds = load_dataset("mnist1d", size=100, seed=7)
    assert (np.random.rand(), random.random()) == (expected_np, expected_py)
    assert (tmp_path / mnist1d_cache_path(tmp_path, 100, 7).name).is_file()
    assert (len(ds.y_train), len(ds.y_test)) == (80, 20)
    other = load_dataset("mnist1d", size=100, seed=8)
    assert not torch.equal(ds.x_train, other.x_train)


def test_mnist1d_regenerates_a_corrupt_cache(tmp_path):
    path = mnist1d_cache_path(tmp_path, 100, 0)
    path.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="ignoring unreadable MNIST-1D cache"):
        ds = load_dataset("mnist1d", size=100, seed=0, cache_dir=tmp_path)
    assert ds.x_train.shape == (80, 40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_dataset("mnist1d", size=100, seed=0, cache_dir=tmp_path)
    assert torch.equal(ds.x_train, again.x_train)


def test_mnist1d_unwritable_cache_warns_and_still_loads(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    with pytest.warns(UserWarning, match="could not cache MNIST-1D"):
        ds = load_dataset("mnist1d", size=100, seed=0, cache_dir=blocker / "cache")
    assert ds.x_train.shape == (80, 40)


def test_mnist1d_too_small_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="at least 20"):
        load_dataset("mnist1d", size=10, cache_dir=tmp_path)


# ---------------------------------------------------------------- fashion-mnist

needs_fashion = pytest.mark.skipif(
    not DEFAULT_ROOT.is_dir(),
    reason=f"Fashion-MNIST not installed at {DEFAULT_ROOT} (Debian package dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def fashion():
    """The full real Fashion-MNIST, loaded once for this module (about a second)."""
    return load_dataset("fashion-mnist")


@needs_fashion
def test_fashion_mnist_full_real_data(fashion):
    ds = fashion
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    assert ds.classes == FASHION_MNIST_CLASSES and ds.num_classes == 10
    assert ds.y_train.bincount().tolist() == [6000] * 10
    assert ds.y_test.bincount().tolist() == [1000] * 10


@needs_fashion
def test_fashion_mnist_subsample(fashion):
    ds = limit_size(fashion, 700, seed=1)  # what load_dataset(..., size=700) applies
    assert (len(ds.y_train), len(ds.y_test)) == (600, 100)
    assert ds.y_test.bincount().tolist() == [10] * 10


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if compress else blob)


def fake_fashion_dir(root: Path, *, n_train=20, n_test=10, compress=False, labels_n=None) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        suffix = ".gz" if compress else ""
        write_idx(
            root / f"{prefix}-images-idx3-ubyte{suffix}",
            rng.integers(0, 256, (n, 28, 28)),
            compress=compress,
        )
        write_idx(
            root / f"{prefix}-labels-idx1-ubyte{suffix}",
            np.arange(labels_n or n) % 10,
            compress=compress,
        )
    return root


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_mnist_reads_plain_or_gzip_files_from_root(tmp_path, compress):
    root = fake_fashion_dir(tmp_path, compress=compress)
    ds = load_dataset("fashion-mnist", root=root)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert float(ds.x_train.min()) >= 0.0 and float(ds.x_train.max()) <= 1.0
    assert ds.y_train.tolist() == [i % 10 for i in range(20)]


def test_fashion_mnist_missing_directory_has_install_hint(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", root=tmp_path / "nowhere")
    assert "does not exist" in str(info.value)
    assert info.value.help == (
        "install the Debian package dataset-fashion-mnist or pass --set data.root=DIR"
    )


def test_fashion_mnist_missing_file_and_count_mismatch(tmp_path):
    fake_fashion_dir(tmp_path, labels_n=19)
    with pytest.raises(DataError, match=r"has 20 images but .*train-labels-idx1-ubyte has 19"):
        load_dataset("fashion-mnist", root=tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    os.remove(tmp_path / "train-labels-idx1-ubyte")
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\[\.gz\] not found"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_fashion_mnist_corrupt_file_is_named(tmp_path):
    fake_fashion_dir(tmp_path)
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-5])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is truncated"):
        load_dataset("fashion-mnist", root=tmp_path)


# ---------------------------------------------------------------- user .npz


def test_npz_with_x_y_is_split_80_20(tmp_path):
    path = tmp_path / "mine.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((50, 2, 3)), y=np.arange(50) % 5, classes=np.array(list("abcde")))
    for name in (f"npz:{path}", str(path)):
        ds = load_dataset(name, seed=0)
        assert (len(ds.y_train), len(ds.y_test)) == (40, 10)
        assert ds.input_shape == (2, 3) and ds.classes == tuple("abcde")
        assert ds.x_train.dtype == torch.float32
    other = load_dataset(str(path), seed=1)
    assert not torch.equal(ds.x_test, other.x_test)


def test_npz_with_explicit_split_and_relative_root(tmp_path):
    np.savez(
        tmp_path / "split.npz",
        x_train=np.ones((6, 4), dtype=np.int16),
        y_train=np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8),
        x_test=np.zeros((3, 4)),
        y_test=np.array([2.0, 1.0, 0.0]),
    )
    ds = load_dataset("npz:split.npz", root=tmp_path)
    assert ds.x_train.shape == (6, 4) and ds.y_test.tolist() == [2, 1, 0]
    assert ds.classes == ("0", "1", "2")


def save(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((10, 2))}, "missing arrays; found ['x']"),
        ({"x": np.zeros((10, 2)), "y": np.zeros(9, dtype=int)}, "'x' has 10 samples but 'y' has 9"),
        ({"x": np.full((10, 2), np.nan), "y": np.arange(10) % 2}, "20 input values are NaN"),
        ({"x": np.zeros((10, 2)), "y": np.arange(10) - 1}, "negative label -1"),
        ({"x": np.zeros((10, 2)), "y": np.arange(10) * 0.5}, "non-integer labels"),
        (
            {"x": np.zeros((10, 2)), "y": np.arange(10), "classes": np.array(["a", "b"])},
            "label 9 is out of range for the 2 classes",
        ),
        ({"x": np.array([["a", "b"]] * 10), "y": np.arange(10)}, "non-numeric dtype <U1"),
        ({"x": np.zeros(10), "y": np.arange(10)}, "must be [N, features...]"),
        ({"x": np.zeros((10, 2)), "y": np.zeros((10, 1), dtype=int)}, "must be 1-D labels"),
    ],
)
def test_npz_malformed_content_raises_naming_file(tmp_path, arrays, message):
    path = save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as info:
        load_dataset(path)
    assert message in str(info.value)
    assert path in str(info.value)
    assert info.value.help


def test_npz_ragged_object_array_is_refused(tmp_path):
    ragged = np.empty(3, dtype=object)
    ragged[:] = [np.zeros(2), np.zeros(3), np.zeros(4)]
    path = save(tmp_path / "ragged.npz", x=ragged, y=np.arange(3))
    with pytest.raises(DataError, match=r"object arrays \(ragged or non-numeric"):
        load_dataset(path)


def test_npz_truncated_and_garbage_files(tmp_path):
    path = tmp_path / "trunc.npz"
    np.savez(path, x=np.random.default_rng(0).random((200, 8)), y=np.arange(200) % 3)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"trunc\.npz") as info:
        load_dataset(str(path))
    assert "corrupt" in str(info.value) or "not a readable" in str(info.value)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match=r"garbage\.npz"):
        load_dataset(str(garbage))


def test_npz_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


def test_registry_lists_every_builtin_and_load_dataset_accepts_them():
    assert set(DATASETS) == {"digits", "fashion-mnist", "mnist1d"}
    assert all(name in dataset_names() for name in DATASETS)
    ds = DATASETS["digits"](root=None, size=100, seed=0, cache_dir=None)
    assert len(ds.y_train) + len(ds.y_test) == 100
