"""text: corpora and python-stdlib: windows, a deterministic disjoint split, provenance, the
contiguous partition keeping documents whole, and the checks that refuse misfits."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from ddla.config import RunConfig
from ddla.data import load_dataset, partition
from ddla.data.config import DataConfig
from ddla.data.loaders.text import (
    STDLIB_MODULES,
    VALIDATION_FRACTION,
    load_python_stdlib,
    load_text,
    stdlib_dir,
)
from ddla.errors import ConfigError, DataError
from ddla.tasks import check_task_config, get_task, resolve_partition

CONTEXT = 16


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Three documents of different sizes, each made of its own letter (so bytes name docs)."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(bytes(range(97, 107)) * 80)  # 800 bytes
    (root / "sub" / "b.md").write_bytes(b"B" * 1440 + b"~" * 160)  # tail: the ~ run
    (root / "c.py").write_bytes(b"print('c')\n" * 100)
    (root / "skip.bin").write_bytes(b"\x00" * 5000)  # not a text suffix: not read
    return root


def _stream(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The token stream the windows were cut from (x rows, then y's last token)."""
    return torch.cat([x.reshape(-1), y[-1, -1:]])


def test_windows_are_next_token_pairs_of_both_splits(corpus: Path) -> None:
    ds = load_text(corpus, context=CONTEXT)
    assert ds.x_train.dtype == ds.y_train.dtype == torch.int64
    assert ds.input_shape == (CONTEXT,) and ds.num_classes == 256 and ds.task == "lm"
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
        assert torch.equal(x[1:, 0], y[:-1, -1])  # windows are contiguous, non-overlapping
    assert ds.documents == ("a.txt", "c.py", "sub/b.md")


def test_split_is_each_documents_tail_deterministic_and_disjoint(corpus: Path) -> None:
    ds = load_text(corpus, context=CONTEXT)
    again = load_text(corpus, context=CONTEXT, seed=5)  # the split does not depend on the seed
    for name in ("x_train", "y_train", "x_test", "y_test", "groups_train"):
        assert torch.equal(getattr(ds, name), getattr(again, name)), name
    heads, tails = [], []
    for doc in ds.documents:
        data = (corpus / doc).read_bytes()
        cut = len(data) - int(len(data) * VALIDATION_FRACTION)
        heads.append(data[:cut])
        tails.append(data[cut:])
    train = bytes(_stream(ds.x_train, ds.y_train).to(torch.uint8).tolist())
    test = bytes(_stream(ds.x_test, ds.y_test).to(torch.uint8).tolist())
    # Each split is a prefix of its own concatenation (the remainder short of a window is
    # dropped), so no byte position of a document is in both.
    assert b"".join(heads).startswith(train) and len(train) > 0.85 * len(b"".join(heads))
    assert b"".join(tails).startswith(test) and len(test) > 0
    assert b"~" * 100 in test and b"~" not in train  # b.md's tail is validation only


def test_groups_name_the_document_of_each_windows_first_token(corpus: Path) -> None:
    ds = load_text(corpus, context=CONTEXT)
    sizes = [len((corpus / d).read_bytes()) for d in ds.documents]
    cuts = np.cumsum([s - int(s * VALIDATION_FRACTION) for s in sizes])
    starts = np.arange(len(ds.x_train)) * CONTEXT
    np.testing.assert_array_equal(ds.groups_train.numpy(), np.searchsorted(cuts, starts, "right"))


def test_provenance_records_files_and_sha256(corpus: Path) -> None:
    info = load_text(corpus, context=CONTEXT).provenance
    assert [f["path"] for f in info["files"]] == ["a.txt", "c.py", "sub/b.md"]
    for f in info["files"]:
        assert f["sha256"] == hashlib.sha256((corpus / f["path"]).read_bytes()).hexdigest()
    joined = "".join(f["sha256"] for f in info["files"]).encode()
    assert info["sha256"] == hashlib.sha256(joined).hexdigest()
    assert info["tokenizer"] == "bytes" and info["context"] == CONTEXT


def test_single_file_and_relative_root(corpus: Path) -> None:
    one = load_dataset(f"text:{corpus / 'c.py'}", context=CONTEXT)
    rel = load_dataset("text:c.py", root=corpus, context=CONTEXT)
    assert one.documents == rel.documents == ("c.py",)
    assert torch.equal(one.x_train, rel.x_train)


def test_size_keeps_windows_from_every_document_per_seed(corpus: Path) -> None:
    full = load_text(corpus, context=CONTEXT)
    a = load_text(corpus, context=CONTEXT, size=40, seed=1)
    b = load_text(corpus, context=CONTEXT, size=40, seed=1)
    c = load_text(corpus, context=CONTEXT, size=40, seed=2)
    assert len(a.x_train) + len(a.x_test) == 40
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert set(a.groups_train.tolist()) == set(full.groups_train.tolist())
    rows = {tuple(r) for r in full.x_train.tolist()}
    assert all(tuple(r) in rows for r in a.x_train.tolist())  # a subset of the full windows
    with pytest.raises(ConfigError, match="out of range"):
        load_text(corpus, context=CONTEXT, size=10**6)


def test_python_stdlib_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the default corpus must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    ds = load_dataset("python-stdlib", context=64, size=500)
    assert ds.documents == STDLIB_MODULES
    info = ds.provenance
    digest = hashlib.sha256((stdlib_dir() / "typing.py").read_bytes()).hexdigest()
    assert next(f for f in info["files"] if f["path"] == "typing.py")["sha256"] == digest
    assert info["bytes"] > 500_000 and len(info["sha256"]) == 64


def test_clear_errors(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_text(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no text files"):
        load_text(tmp_path / "empty")
    with pytest.raises(DataError, match="too small for context"):
        load_text(corpus / "c.py", context=1024)
    with pytest.raises(ConfigError, match="context must be an integer >= 2"):
        load_text(corpus, context=1)
    with pytest.raises(DataError, match="modules missing"):
        load_python_stdlib(root=tmp_path)


def test_contiguous_partition_keeps_documents_whole(corpus: Path) -> None:
    ds = load_text(corpus, context=CONTEXT)
    groups = ds.partition_labels.numpy()
    parts = partition("contiguous", groups, n_agents=3, seed=0)
    assert np.array_equal(np.concatenate(parts), np.arange(len(groups)))  # in order, covering
    owners = [set(groups[p].tolist()) for p in parts]
    assert all(len(o) == 1 for o in owners) and len(set.union(*owners)) == 3
    other_seed = partition("contiguous", groups, n_agents=3, seed=9)
    assert all(np.array_equal(a, b) for a, b in zip(other_seed, parts, strict=True))


def test_contiguous_splits_a_document_larger_than_a_part() -> None:
    labels = np.zeros(100, dtype=np.int64)  # one document
    parts = partition("contiguous", labels, n_agents=4, seed=0)
    assert [len(p) for p in parts] == [25, 25, 25, 25]
    labels[60:] = 1  # a boundary within half a part of the cut at 50 moves it there
    parts = partition("contiguous", labels, n_agents=2, seed=0)
    assert [len(p) for p in parts] == [60, 40]


def test_text_datasets_default_to_contiguous_and_refuse_label_skew(corpus: Path) -> None:
    lm = get_task("lm")
    assert DataConfig().partition == "auto"
    assert resolve_partition("auto", lm) == "contiguous"
    assert resolve_partition("iid", lm) == "iid"
    for spec in ("dirichlet:0.5", "shards:2"):
        with pytest.raises(ConfigError, match="does not fit a language-model dataset"):
            resolve_partition(spec, lm)
    cfg = RunConfig.load(
        None, [f"data.dataset=text:{corpus}", "data.pull_every=5", "security.enabled=true"]
    )
    with pytest.raises(ConfigError, match="trade samples by class label"):
        check_task_config(lm, cfg)
    with pytest.raises(ConfigError, match="unknown dataset"):
        DataConfig(dataset="txt:/x")
