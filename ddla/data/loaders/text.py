"""Text corpora for language models: ``text:PATH`` and the built-in ``python-stdlib`` corpus.

Tokens are bytes (vocabulary 256): every file is valid input, nothing is downloaded, and no
tokenizer files are needed. (The maintained subword tokenizers, ``tiktoken`` and Hugging Face
``tokenizers``, fetch their vocabularies from the network on first use, which ddla never does
at run time; byte-level is what nanoGPT's ``shakespeare_char`` and ByT5 train on.)

A corpus is a list of *documents* (one per file, in sorted path order). The split is
per document: the last ``VALIDATION_FRACTION`` of each document's bytes is validation text,
the rest training text, so both splits cover every document and never share a byte. Each
split is concatenated and cut into non-overlapping windows of ``context`` tokens; sample
``i`` is ``x = stream[i*context : (i+1)*context]`` and its target ``y`` the same window
shifted by one token. ``groups_train[i]`` is the document of the window's first token, which
is what the ``contiguous`` partition keeps together (whole documents per agent).

The default corpus, ``python-stdlib``, is :data:`STDLIB_MODULES` read from this interpreter's
own standard library (``sysconfig.get_paths()["stdlib"]``), so it exists on every machine
that runs ddla. Its bytes depend on the Python version; :attr:`TextDataset.provenance` records
the files, their sizes and SHA-256 digests, and the digest of the whole corpus.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.txt").write_text("hello world, " * 200)
    >>> ds = load_text(d, context=16)
    >>> ds.x_train.dtype, ds.input_shape, ds.num_classes, ds.task
    (torch.int64, (16,), 256, 'lm')
    >>> bool((ds.x_train[0, 1:] == ds.y_train[0, :-1]).all())
    True
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddla.data.dataset import stratified_take
from ddla.errors import ConfigError, DataError

__all__ = [
    "STDLIB_MODULES",
    "TEXT_PREFIX",
    "VALIDATION_FRACTION",
    "TextDataset",
    "load_python_stdlib",
    "load_text",
]

TEXT_PREFIX = "text:"
VOCAB_SIZE = 256
VALIDATION_FRACTION = 0.1
"""Share of each document's bytes (its tail) held out for validation."""

STDLIB_MODULES: tuple[str, ...] = (
    "argparse.py",
    "ast.py",
    "configparser.py",
    "dataclasses.py",
    "datetime.py",
    "difflib.py",
    "enum.py",
    "functools.py",
    "inspect.py",
    "pathlib.py",
    "pickle.py",
    "shutil.py",
    "subprocess.py",
    "textwrap.py",
    "threading.py",
    "typing.py",
    "zipfile.py",
)
"""The ``python-stdlib`` corpus: these top-level modules of the running interpreter's standard
library (about 1.3 MB on CPython 3.11), all pure Python and present since 3.8 at least."""

_TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".json", ".csv", ".tex", ".html", ".xml"}


# eq=False: a generated __eq__ would compare tensors elementwise and raise on bool().
@dataclass(frozen=True, eq=False)
class TextDataset:
    """Windows of byte tokens for next-token prediction; duck-types :class:`Dataset`.

    ``x_*`` and ``y_*`` are int64 ``[N, context]``: ``y`` is ``x`` shifted by one token.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    groups_train: torch.Tensor
    """int64 ``[N]``: the document of each training window (what partitions keep together)."""
    documents: tuple[str, ...]
    """Document names (file paths relative to the corpus root), in stream order."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Files, sizes, SHA-256 per file and of the corpus; tokenizer; split; context."""
    task: str = "lm"
    classes: tuple[str, ...] = tuple(str(b) for b in range(VOCAB_SIZE))
    """One "class" per token: the byte values ``0..255``."""

    @property
    def num_classes(self) -> int:
        """Vocabulary size (256 byte tokens)."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(context,)``: tokens per sample."""
        return tuple(self.x_train.shape[1:])

    @property
    def partition_labels(self) -> torch.Tensor:
        """What partitioners split on: the document of each training window."""
        return self.groups_train


def _corpus_files(path: Path) -> tuple[Path, list[Path]]:
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise DataError(
            f"text corpus {path} does not exist",
            help="text:PATH takes a text file or a directory of text files",
        )
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES)
    if not files:
        raise DataError(
            f"text corpus {path} holds no text files ({', '.join(sorted(_TEXT_SUFFIXES))})",
            help="point text:PATH at a file, or a directory containing text files",
        )
    return path, files


def _windows(stream: np.ndarray, context: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping ``context``-token windows and their one-token-shifted targets."""
    n = (len(stream) - 1) // context
    t = torch.from_numpy(stream.astype(np.int64))
    x = t[: n * context].view(n, context)
    y = t[1 : n * context + 1].view(n, context)
    return x, y


def build_text_dataset(
    name: str,
    documents: list[tuple[str, bytes]],
    *,
    context: int,
    size: int | None = None,
    seed: int = 0,
    provenance: dict[str, Any] | None = None,
) -> TextDataset:
    """Split ``(name, bytes)`` documents, window them and (optionally) keep ``size`` windows.

    Raises:
        ConfigError: ``context`` < 2 or ``size`` out of range.
        DataError: too little text for one training and one validation window.
    """
    if isinstance(context, bool) or not isinstance(context, int) or context < 2:
        raise ConfigError(
            f"text context must be an integer >= 2, got {context!r}",
            help="set data.context to the tokens per sample, e.g. 128",
        )
    train_parts, test_parts, owners = [], [], []
    for doc, (_, data) in enumerate(documents):
        arr = np.frombuffer(data, dtype=np.uint8)
        cut = len(arr) - int(len(arr) * VALIDATION_FRACTION)
        train_parts.append(arr[:cut])
        test_parts.append(arr[cut:])
        owners.append(np.full(cut, doc, dtype=np.int64))
    train_stream = np.concatenate(train_parts)
    test_stream = np.concatenate(test_parts)
    x_train, y_train = _windows(train_stream, context)
    x_test, y_test = _windows(test_stream, context)
    total_bytes = sum(len(d) for _, d in documents)
    if len(x_train) < 1 or len(x_test) < 1:
        raise DataError(
            f"text corpus {name!r} ({total_bytes} bytes) is too small for context {context}: "
            f"{len(x_train)} training and {len(x_test)} validation windows",
            help=f"use more text (at least ~{context * 11} bytes) or a smaller data.context",
        )
    groups = torch.from_numpy(np.concatenate(owners)[: len(x_train) * context : context].copy())
    if size is not None:
        total = len(x_train) + len(x_test)
        if not 2 <= size <= total:
            raise ConfigError(
                f"data size {size} is out of range for {name!r}, which has {total} windows "
                f"of {context} tokens",
                help=f"choose a size between 2 and {total}, or leave it unset to use all text",
            )
        keep_test = min(max(1, round(size * len(x_test) / total)), size - 1)
        # Proportional per document, so a smaller corpus still holds every document.
        tr = torch.from_numpy(stratified_take(groups.numpy(), size - keep_test, seed))
        rng = np.random.default_rng(seed + 1)
        te = torch.from_numpy(np.sort(rng.permutation(len(x_test))[:keep_test]))
        x_train, y_train, groups = x_train[tr], y_train[tr], groups[tr]
        x_test, y_test = x_test[te], y_test[te]
    info = dict(provenance or {})
    info.update(
        tokenizer="bytes",
        vocab_size=VOCAB_SIZE,
        context=context,
        validation=f"last {VALIDATION_FRACTION:.0%} of each document",
        train_windows=len(x_train),
        validation_windows=len(x_test),
        train_tokens=len(x_train) * context,
        validation_tokens=len(x_test) * context,
    )
    return TextDataset(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        groups_train=groups,
        documents=tuple(n for n, _ in documents),
        provenance=info,
    )


def _read_documents(root: Path, files: list[Path]) -> tuple[list[tuple[str, bytes]], dict]:
    documents, listed = [], []
    corpus = hashlib.sha256()
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {f}: {exc}", help="check the file's permissions") from exc
        rel = str(f.relative_to(root)) if f.is_relative_to(root) else str(f)
        documents.append((rel, data))
        digest = hashlib.sha256(data).hexdigest()
        corpus.update(digest.encode())
        listed.append({"path": rel, "bytes": len(data), "sha256": digest})
    return documents, {
        "root": str(root),
        "files": listed,
        "bytes": sum(item["bytes"] for item in listed),
        "sha256": corpus.hexdigest(),
        "sha256_of": "sha256 of the concatenated per-file sha256 hex digests, in file order",
    }


def load_text(
    path: str | Path,
    *,
    root: str | Path | None = None,
    size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    context: int = 128,
) -> TextDataset:
    """A text file, or every text file under a directory (sorted), as byte-token windows.

    A relative ``path`` is taken relative to ``root`` if given. ``size`` keeps that many
    windows in total (train + validation, in proportion; train windows per document).
    """
    path = Path(path)
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    base, files = _corpus_files(path)
    documents, provenance = _read_documents(base, files)
    return build_text_dataset(
        f"{TEXT_PREFIX}{path}",
        documents,
        context=context,
        size=size,
        seed=seed,
        provenance=provenance,
    )


def stdlib_dir() -> Path:
    """This interpreter's standard library directory (where :data:`STDLIB_MODULES` live)."""
    return Path(sysconfig.get_paths()["stdlib"])


def load_python_stdlib(
    *,
    root: str | Path | None = None,
    size: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    context: int = 128,
) -> TextDataset:
    """The built-in corpus: :data:`STDLIB_MODULES` from the running Python's standard library.

    ``root`` overrides the library directory (a copy of another interpreter's, say).
    """
    base = Path(root) if root is not None else stdlib_dir()
    files = [base / m for m in STDLIB_MODULES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"python-stdlib corpus: {len(missing)} modules missing, e.g. {missing[0]}",
            help="data.root must be a Python standard library directory (or leave it unset)",
        )
    documents, provenance = _read_documents(base, files)
    import sys

    provenance["python"] = sys.version.split()[0]
    return build_text_dataset(
        "python-stdlib", documents, context=context, size=size, seed=seed, provenance=provenance
    )
