"""Decode a dataset once, then memory-map it: the cache every process of a run shares.

Decoding Fashion-MNIST (gunzip, parse IDX, scale to float32) costs each process ~1 s and a
188 MB private copy. Here the decoded arrays are written once as plain ``.npy`` files in one
entry directory and every later reader maps them with ``numpy.load(mmap_mode="c")``: pages
come from the OS page cache, shared by all agents on the machine, and a process only pays
resident memory for the rows it touches (copy-on-write, so torch gets writable tensors
without a copy).

An entry is keyed by the dataset name, the loader's parameters, a format version and the
SHA-256 of every source file, so editing or replacing a source file invalidates it. It is
built in a private temporary directory and renamed into place (atomic on POSIX), so agents
racing to build it never read a half-written entry; the loser's copy is dropped. Its
``meta.json`` is written last and names the arrays, shapes and dtypes it must hold.

:func:`take_rows` copies selected rows of a cached array with ``pread`` instead of touching
the mapping, so an agent gathering its shard pays the shard's bytes, not the pages its rows
happen to share with other agents' rows.

Example:
    >>> import tempfile, numpy as np
    >>> root = tempfile.mkdtemp()
    >>> build = lambda: ({"x": np.arange(6, dtype=np.float32).reshape(3, 2)}, {"n": 3})
    >>> arrays, meta = cached_arrays("toy", {}, [], build, cache_dir=root)
    >>> arrays["x"][1].tolist(), meta["n"]
    ([2.0, 3.0], 3)
    >>> take_rows(arrays["x"], np.array([0, 2])).tolist()
    [[0.0, 1.0], [4.0, 5.0]]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CACHE_VERSION",
    "cache_entry",
    "cached_arrays",
    "default_cache_dir",
    "file_sha256",
    "is_cached",
    "take_rows",
]

CACHE_VERSION = 1
"""Bump when the meaning of cached arrays changes, so old entries are not reused."""

_META = "meta.json"
# Data address of each open cached array -> (file, data offset, shape, dtype), so take_rows
# can pread the rows of a cached array (or of a torch tensor sharing its memory). Entries go
# when the array is collected, before its address can be reused.
_BACKING: dict[int, tuple[str, int, tuple[int, ...], np.dtype]] = {}


def default_cache_dir() -> Path:
    """``$DDLA_CACHE`` if set, else ``~/.cache/ddla``."""
    env = os.environ.get("DDLA_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ddla"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (page cache, never resident in this process)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def cache_entry(
    name: str, params: dict[str, Any], sources: Sequence[Path], cache_dir: str | Path | None
) -> tuple[Path, dict[str, Any]]:
    """The entry directory for these inputs and the key record it is derived from."""
    key = {
        "version": CACHE_VERSION,
        "name": name,
        "params": params,
        "sources": {str(Path(p).resolve()): file_sha256(Path(p)) for p in sources},
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    base = default_cache_dir() if cache_dir is None else Path(cache_dir)
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return base / "arrays" / f"{safe}-{digest}", key


def _open(entry: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    meta_path = entry / _META
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {}
        for key, spec in meta["arrays"].items():
            path = entry / f"{key}.npy"
            a = np.load(path, mmap_mode="c", allow_pickle=False)
            if list(a.shape) != spec["shape"] or str(a.dtype) != spec["dtype"]:
                raise ValueError(f"{path}: shape/dtype differ from {_META}")
            addr = a.ctypes.data
            _BACKING[addr] = (str(path), int(a.offset), a.shape, a.dtype)
            weakref.finalize(a, _BACKING.pop, addr, None)
            arrays[key] = a
        return arrays, meta["user"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Derived data: a damaged entry is rebuilt, never fatal.
        warnings.warn(f"ignoring damaged dataset cache {entry}: {exc}", stacklevel=3)
        return None


def _write(
    entry: Path, arrays: dict[str, np.ndarray], user: dict[str, Any], key: dict[str, Any]
) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.", suffix=".tmp"))
    try:
        spec = {}
        for k, a in arrays.items():
            a = np.ascontiguousarray(a)
            np.save(tmp / f"{k}.npy", a, allow_pickle=False)
            spec[k] = {"shape": list(a.shape), "dtype": str(a.dtype)}
        meta = {"key": key, "arrays": spec, "user": user}
        (tmp / _META).write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, entry)  # atomic; fails if another process got there first
        except OSError:
            if not (entry / _META).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_arrays(
    name: str,
    params: dict[str, Any],
    sources: Sequence[Path],
    build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
    *,
    cache_dir: str | Path | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Memory-mapped arrays of ``build()``, decoded at most once per distinct input.

    Args:
        name: dataset name (part of the key and of the entry's directory name).
        params: every loader parameter that changes the arrays (JSON-serialisable).
        sources: the files the arrays are decoded from; their SHA-256 is part of the key.
        build: returns ``(arrays, meta)``: numpy arrays by name and a JSON-able dict.
        cache_dir: base directory (default ``$DDLA_CACHE`` or ``~/.cache/ddla``).

    Returns ``(arrays, meta)`` with each array a copy-on-write memory map. If the cache
    cannot be written (read-only disk) the built arrays are returned in memory, with a warning.
    """
    entry, key = cache_entry(name, params, sources, cache_dir)
    hit = _open(entry)
    if hit is not None:
        return hit
    arrays, user = build()
    try:
        if entry.exists():  # damaged: replace it
            shutil.rmtree(entry, ignore_errors=True)
        _write(entry, arrays, user, key)
    except OSError as exc:
        warnings.warn(
            f"could not cache {name} in {entry.parent}: {exc}; set DDLA_CACHE to a writable "
            "directory to decode it only once",
            stacklevel=2,
        )
        return arrays, user
    hit = _open(entry)
    return hit if hit is not None else (arrays, user)


def _backing(a: Any) -> tuple[str, int, tuple[int, ...], np.dtype] | None:
    if isinstance(a, np.ndarray):
        addr, shape, contiguous = a.ctypes.data, a.shape, a.flags.c_contiguous
    else:
        addr, shape = a.data_ptr(), tuple(a.shape)
        contiguous = a.is_contiguous() and a.storage_offset() == 0
    backing = _BACKING.get(addr)
    if backing is None or backing[2] != shape or not contiguous or len(shape) < 1:
        return None
    return backing


def is_cached(a: Any) -> bool:
    """True when ``a`` (array or tensor) is a whole array of the cache, so rows can be preads."""
    return _backing(a) is not None


def take_rows(a: Any, rows: np.ndarray) -> Any:
    """``a[rows]`` as a private copy; rows of a cached array are read with ``pread``.

    ``a`` is a numpy array or a torch tensor (the result has the same type). Reading through
    the file leaves the mapping untouched, so the process's resident memory grows by the
    selected rows only; indexing the map would make every page that holds part of a selected
    row resident (for a random quarter of Fashion-MNIST, about half the file). Runs of
    consecutive rows are read in one call.
    """
    rows = np.asarray(rows, dtype=np.int64)
    is_tensor = not isinstance(a, np.ndarray)
    backing = _backing(a)
    if backing is None:
        return a[torch_index(rows)] if is_tensor else np.ascontiguousarray(a[rows])
    path, offset, shape, dtype = backing
    out = np.empty((len(rows), *shape[1:]), dtype=dtype)
    if len(rows) and (rows.min() < 0 or rows.max() >= shape[0]):
        raise IndexError(f"row index out of range for {shape[0]} rows")
    row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    flat = out.reshape(-1).view(np.uint8)
    if len(rows):
        # Runs of consecutive row numbers: one pread each.
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], breaks]).tolist()
        ends = np.concatenate([breaks, [len(rows)]]).tolist()
        fd = os.open(path, os.O_RDONLY)
        try:
            for s, e in zip(starts, ends, strict=True):
                buf = memoryview(flat[s * row_bytes : e * row_bytes])
                got = os.preadv(fd, [buf], offset + int(rows[s]) * row_bytes)
                if got != (e - s) * row_bytes:
                    raise OSError(f"{path}: short read ({got} of {(e - s) * row_bytes} bytes)")
        finally:
            os.close(fd)
    return torch_index(out) if is_tensor else out


def torch_index(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(a)
