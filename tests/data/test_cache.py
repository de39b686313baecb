"""The decoded, memory-mapped dataset cache: hits, invalidation, row reads, equal results."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ddla.data import load_dataset
from ddla.data.cache import cache_entry, cached_arrays, is_cached, take_rows
from ddla.data.loaders.fashion_mnist import DEFAULT_ROOT


def _idx(path: Path, a: np.ndarray) -> None:
    """Write ``a`` (uint8) as a gzipped IDX file: magic 0x0000080N, big-endian dims, data."""
    header = bytes([0, 0, 8, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    path.write_bytes(gzip.compress(header + a.tobytes()))


def _fake_fashion(root: Path, n: int = 30, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", n), ("t10k", n // 3)):
        _idx(
            root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28), np.uint8)
        )
        _idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count, dtype=np.uint8) % 10)


def test_hit_is_memory_mapped_and_equal_to_a_fresh_decode(tmp_path: Path) -> None:
    root = tmp_path / "fm"
    _fake_fashion(root)
    fresh = load_dataset("fashion-mnist", root=root, cache=False)
    first = load_dataset("fashion-mnist", root=root, cache_dir=tmp_path / "c")
    again = load_dataset("fashion-mnist", root=root, cache_dir=tmp_path / "c")
    entries = list((tmp_path / "c" / "arrays").iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    for ds in (first, again):
        for key in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(ds, key), getattr(fresh, key)), key
    # the cached tensors share memory with a map of the .npy file, not a private copy
    mapped = np.load(entries[0] / "x_train.npy", mmap_mode="r")
    assert again.x_train.data_ptr() != 0 and mapped.shape == tuple(again.x_train.shape)
    assert again.classes == fresh.classes


def test_changing_a_source_file_invalidates_the_entry(tmp_path: Path) -> None:
    root, cache = tmp_path / "fm", tmp_path / "c"
    _fake_fashion(root, seed=0)
    before = load_dataset("fashion-mnist", root=root, cache_dir=cache)
    _fake_fashion(root, seed=1)  # same names and sizes, other pixels
    after = load_dataset("fashion-mnist", root=root, cache_dir=cache)
    assert not torch.equal(before.x_train, after.x_train)
    assert torch.equal(after.x_train, load_dataset("fashion-mnist", root=root, cache=False).x_train)
    assert len(list((cache / "arrays").iterdir())) == 2


def test_damaged_entry_is_rebuilt(tmp_path: Path) -> None:
    build = lambda: ({"x": np.arange(12, dtype=np.float32).reshape(4, 3)}, {"k": 1})  # noqa: E731
    entry, _ = cache_entry("toy", {}, [], tmp_path)
    cached_arrays("toy", {}, [], build, cache_dir=tmp_path)
    (entry / "x.npy").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="damaged dataset cache"):
        arrays, meta = cached_arrays("toy", {}, [], build, cache_dir=tmp_path)
    assert arrays["x"].tolist() == build()[0]["x"].tolist() and meta == {"k": 1}


def test_unwritable_cache_still_loads(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    build = lambda: ({"x": np.ones((2, 2), np.float32)}, {})  # noqa: E731
    with pytest.warns(UserWarning, match="could not cache"):
        arrays, _ = cached_arrays("toy", {}, [], build, cache_dir=blocker)
    assert arrays["x"].sum() == 4


@pytest.mark.parametrize("as_tensor", [False, True])
def test_take_rows_reads_the_rows_from_the_file(tmp_path: Path, as_tensor: bool) -> None:
    data = np.random.default_rng(0).random((50, 3, 4)).astype(np.float32)
    arrays, _ = cached_arrays("rows", {}, [], lambda: ({"x": data}, {}), cache_dir=tmp_path)
    x = torch.from_numpy(arrays["x"]) if as_tensor else arrays["x"]
    rows = np.array([0, 1, 2, 7, 8, 30, 49])
    assert is_cached(x) and not is_cached(x[1:])
    got = take_rows(x, rows)
    assert isinstance(got, torch.Tensor) == as_tensor and not isinstance(got, np.memmap)
    np.testing.assert_array_equal(np.asarray(got), data[rows])
    # private: writing to the copy changes neither the map nor the file
    got[0] = -1
    assert float(arrays["x"][0, 0, 0]) == data[0, 0, 0]
    with pytest.raises(IndexError):
        take_rows(x, np.array([50]))


def test_take_rows_of_plain_arrays_is_indexing() -> None:
    x = torch.arange(20.0).reshape(10, 2)
    assert torch.equal(take_rows(x, np.array([3, 1])), x[[3, 1]])


@pytest.mark.skipif(not DEFAULT_ROOT.is_dir(), reason="Fashion-MNIST not installed")
def test_real_fashion_mnist_from_cache_equals_decode(tmp_path: Path) -> None:
    fresh = load_dataset("fashion-mnist", cache=False, size=2000, seed=3)
    cached = load_dataset("fashion-mnist", cache_dir=tmp_path, size=2000, seed=3)
    assert torch.equal(fresh.x_train, cached.x_train) and torch.equal(fresh.y_test, cached.y_test)
    assert os.path.getsize(next((tmp_path / "arrays").iterdir()) / "x_train.npy") > 188_000_000


def _digits_run(transport, cache: bool, out: str) -> dict:
    from ddla.agent import train
    from ddla.config import RunConfig
    from ddla.job import job_from_config

    config = RunConfig.load(
        None,
        [
            f"agents={transport.world_size}",
            f"out={out}",
            f"data.cache={'true' if cache else 'false'}",
            f"data.cache_dir={out}-cache",
            "data.dataset=digits",
            "data.batch_size=16",
            "model.hidden=32",
            "train.steps=12",
            "train.eval_every=6",
        ],
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    job = job_from_config(config)
    summary = train(job, config, transport, progress=False)
    return {"state": job.model.state_dict(), "final": summary and summary["final"]}


@pytest.mark.dist
def test_a_run_is_identical_with_and_without_the_cache(tmp_path: Path) -> None:
    from ddla.testing import run_agents

    cached = run_agents(_digits_run, 2, True, str(tmp_path / "c"), timeout_s=300)
    plain = run_agents(_digits_run, 2, False, str(tmp_path / "p"), timeout_s=300)
    assert any((tmp_path / "c-cache" / "arrays").iterdir())  # the cached run used the cache
    assert not (tmp_path / "p-cache").exists()
    for a, b in zip(cached, plain, strict=True):
        for k, v in a["state"].items():
            assert torch.equal(v, b["state"][k]), k
    assert cached[0]["final"] == plain[0]["final"]
