"""Per-agent data sources: each agent reads its own file; agents agree without moving data.

In the setting ddla exists for, every site already holds its data. ``data.source`` names each
agent's file instead of one dataset to partition:

* ``npz:/data/site-{rank}.npz`` (or a bare ``PATH.npz``) with the placeholders ``{rank}``,
  ``{node}`` (torchrun's ``GROUP_RANK``) and ``{local_rank}``; on several machines each
  machine expands the template to its own paths;
* ``a.npz,b.npz,...``: one file per agent, in rank order (exactly one per agent);
* a directory: its ``*.npz`` files in name order, one per agent (exactly one per agent).

Each file is a normal ddla ``.npz`` dataset (:mod:`ddla.data.loaders.npz`): its train split is
the agent's training data and its test split the site's own test set. Before training the
agents exchange one small descriptor each (:func:`agree`): sample shape, stored dtype, class
names and per-class counts, never a sample. A site that failed to load, or whose shape or
dtype differs from agent 0's, stops every agent with the same one-line error naming it.

Example:
    >>> site_path("npz:/data/site-{rank}.npz", rank=2, world=4)
    PosixPath('/data/site-2.npz')
    >>> site_path("a.npz,b.npz", rank=1, world=2)
    PosixPath('b.npz')
"""

from __future__ import annotations

import contextlib
import os
import string
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ddla.errors import ConfigError, DataError, DdlaError

if TYPE_CHECKING:
    import torch

    from ddla.comm import Transport
    from ddla.job import Job

__all__ = [
    "PLACEHOLDERS",
    "Agreement",
    "agree",
    "check_source_spec",
    "describe_site",
    "has_placeholder",
    "site_path",
]

PLACEHOLDERS = ("rank", "node", "local_rank")
_HELP = (
    "data.source takes npz:PATH with {rank}, {node} or {local_rank}, a comma list of one "
    ".npz per agent, or a directory of one .npz per agent"
)


def _fields(template: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"data.source {template!r}: {exc}", help=_HELP) from None


def has_placeholder(spec: str) -> bool:
    """True when ``spec`` contains a ``{rank}``-style placeholder."""
    return bool(_fields(spec))


def check_source_spec(spec: str, *, key: str = "data.source") -> None:
    """Refuse an unknown placeholder at config time (before any agent starts)."""
    for name in _fields(spec):
        if name not in PLACEHOLDERS:
            raise ConfigError(
                f"{key} {spec!r}: unknown placeholder {{{name}}}",
                help=f"placeholders are {', '.join('{' + p + '}' for p in PLACEHOLDERS)}",
            )


def site_path(
    spec: str,
    *,
    rank: int,
    world: int,
    node: int | None = None,
    local_rank: int | None = None,
    key: str = "data.source",
) -> Path:
    """The file agent ``rank`` of ``world`` reads for ``spec`` (see the module docstring)."""
    check_source_spec(spec, key=key)
    body = spec[len("npz:") :] if spec.startswith("npz:") else spec
    node = int(os.environ.get("GROUP_RANK", "0")) if node is None else node
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank))) if local_rank is None else local_rank
    if has_placeholder(body):
        return Path(body.format(rank=rank, node=node, local_rank=local_rank))
    if "," in body:
        paths = [p.strip() for p in body.split(",") if p.strip()]
        if len(paths) != world:
            raise ConfigError(
                f"{key} lists {len(paths)} files for {world} agents",
                help="give exactly one .npz per agent, in rank order",
            )
        return Path(paths[rank])
    path = Path(body)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if len(files) != world:
            raise DataError(
                f"{key} directory {path} holds {len(files)} .npz files for {world} agents",
                help="put exactly one .npz per agent in the directory (taken in name order)",
            )
        return files[rank]
    return path  # one file for every agent (a shared test set, or a single site)


def _stored_dtypes(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape and dtype of each array of an ``.npz`` as stored, read from the headers only."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read(fh)
            out[info.filename[:-4]] = (tuple(shape), str(dtype))
    return out


Split = tuple["torch.Tensor", "torch.Tensor"]


@dataclass(kw_only=True)
class SiteData:
    """One agent's own data: its training set, its test set, and the shared test set if any."""

    path: Path
    train: Split
    site_test: Split | None
    shared_test: Split | None = None
    classes: tuple[str, ...] | None = None
    """Class names the file gives (None: it names none, labels are ``0..max``)."""
    stored_dtype: str = "float32"
    """dtype of the inputs as stored (ddla trains on float32)."""


def _named(path: Path, arrays: dict[str, np.ndarray]) -> tuple[str, ...] | None:
    if "classes" not in arrays:
        return None
    return tuple(str(c) for c in arrays["classes"].tolist())


def load_site(path: Path, *, seed: int) -> SiteData:
    """Load one agent's ``.npz`` (validated by the npz loader) and note its stored dtype."""
    from ddla.data.loaders.npz import load_npz

    ds = load_npz(path, seed=seed)
    stored = _stored_dtypes(path)
    key = "x_train" if "x_train" in stored else "x"
    with np.load(path, allow_pickle=False) as npz:
        names = tuple(str(c) for c in npz["classes"].tolist()) if "classes" in npz else None
    return SiteData(
        path=path,
        train=(ds.x_train, ds.y_train),
        site_test=(ds.x_test, ds.y_test),
        classes=names,
        stored_dtype=stored[key][1],
    )


def load_test_file(path: Path) -> Split:
    """A test set from an ``.npz``: its ``x_test, y_test``, or all of ``x, y``."""
    import torch

    from ddla.data.loaders.npz import _inputs, _labels, _read_arrays

    arrays = _read_arrays(path)
    xk, yk = ("x_test", "y_test") if "x_test" in arrays else ("x", "y")
    if xk not in arrays or yk not in arrays:
        raise DataError(
            f"{path}: a test file needs x_test,y_test or x,y; found {sorted(arrays) or 'none'}"
        )
    x, y = _inputs(path, xk, arrays[xk]), _labels(path, yk, arrays[yk])
    if len(x) != len(y) or len(x) == 0:
        raise DataError(f"{path}: {len(x)} test inputs but {len(y)} labels")
    return torch.from_numpy(x), torch.from_numpy(y)


def _is_per_agent(spec: str) -> bool:
    body = spec[len("npz:") :] if spec.startswith("npz:") else spec
    return has_placeholder(body) or "," in body or Path(body).is_dir()


def load_own(spec: str, test_spec: str | None, *, rank: int, world: int, seed: int) -> SiteData:
    """This agent's data for ``data.source`` / ``data.test_source`` (see the module doc).

    A per-agent ``test_spec`` (placeholder, list or directory) replaces each site's test
    split; a single file is the shared test set, read by agent 0 only (it reports the
    global figure).
    """
    site = load_site(site_path(spec, rank=rank, world=world), seed=seed)
    if test_spec is not None:
        key = "data.test_source"
        if _is_per_agent(test_spec):
            site.site_test = load_test_file(site_path(test_spec, rank=rank, world=world, key=key))
        elif rank == 0:
            site.shared_test = load_test_file(site_path(test_spec, rank=0, world=world, key=key))
    return site


@dataclass(kw_only=True)
class Agreement:
    """What every agent agreed on before training, identical on every agent."""

    classes: tuple[str, ...]
    """The label space: the union of every site's class ids (named if any file names them)."""
    input_shape: tuple[int, ...]
    dtype: str
    paths: list[str]
    counts: list[list[int]] = field(default_factory=list)
    """Training samples per class, one row per agent (padded to the label space)."""
    test_counts: list[list[int]] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """For ``summary.json``: sources, shapes and per-agent class histograms."""
        return {
            "sources": self.paths,
            "input_shape": list(self.input_shape),
            "dtype": self.dtype,
            "classes": list(self.classes),
            "counts": self.counts,
            "test_counts": self.test_counts,
        }


def describe_site(site: SiteData | None, error: BaseException | None, path: str) -> dict:
    """The small record an agent shares about its data: never a sample, only its layout."""
    if site is None:
        help_ = getattr(error, "help", None)
        return {"path": path, "error": str(error), "type": type(error).__name__, "help": help_}
    x, y = site.train
    tests = [t for t in (site.site_test, site.shared_test) if t is not None]
    return {
        "path": str(site.path),
        "shape": list(x.shape[1:]),
        "dtype": site.stored_dtype,
        "test_shapes": [list(t[0].shape[1:]) for t in tests],
        "classes": list(site.classes) if site.classes is not None else None,
        "counts": np.bincount(y.numpy()).tolist(),
        "test_counts": np.bincount(site.site_test[1].numpy()).tolist() if site.site_test else [],
        "max_test_label": max((int(t[1].max()) for t in tests), default=-1),
    }


def check_agreement(records: list[dict]) -> Agreement:
    """Agree on the label space, shape and dtype from every agent's record, or raise.

    The same records give the same answer on every agent, so all stop with the same line.
    """
    for rank, r in enumerate(records):
        if "error" in r:
            raise DataError(
                f"agent {rank} could not load its data ({r['path']}): {r['error']}",
                help=r.get("help") or _HELP,
            )
    ref = records[0]
    for rank, r in enumerate(records[1:], start=1):
        for key, what in (("shape", "samples of shape"), ("dtype", "inputs of dtype")):
            if r[key] != ref[key]:
                shown = tuple(r[key]) if key == "shape" else r[key]
                ref_shown = tuple(ref[key]) if key == "shape" else ref[key]
                raise DataError(
                    f"agent {rank} ({r['path']}) has {what} {shown} but agent 0 "
                    f"({ref['path']}) has {ref_shown}",
                    help="every site must store the same feature layout and dtype",
                )
    for rank, r in enumerate(records):
        for shape in r["test_shapes"]:
            if shape != ref["shape"]:
                raise DataError(
                    f"agent {rank} ({r['path']}) has test samples of shape {tuple(shape)} but "
                    f"training samples of shape {tuple(ref['shape'])}",
                    help="the test set must store the same feature layout as the training set",
                )
    named = [(rank, r["classes"]) for rank, r in enumerate(records) if r["classes"] is not None]
    for rank, names in named[1:]:
        if names != named[0][1]:
            raise DataError(
                f"agent {rank} ({records[rank]['path']}) names its classes {names} but agent "
                f"{named[0][0]} names them {named[0][1]}",
                help="every site must use the same class list (or none)",
            )
    sizes = [max(len(r["counts"]), len(r["test_counts"]), r["max_test_label"] + 1) for r in records]
    size = max(sizes)
    if named:
        names = named[0][1]
        for rank, n in enumerate(sizes):
            if n > len(names):  # a site without names has a label beyond the named list
                raise DataError(
                    f"agent {rank} ({records[rank]['path']}) has label {n - 1} but the class "
                    f"list has {len(names)} names",
                    help="labels index into 'classes'; fix the labels or the class list",
                )
        classes = tuple(names)
    else:
        classes = tuple(str(c) for c in range(size))
    pad = len(classes)
    return Agreement(
        classes=classes,
        input_shape=tuple(ref["shape"]),
        dtype=ref["dtype"],
        paths=[r["path"] for r in records],
        counts=[r["counts"] + [0] * (pad - len(r["counts"])) for r in records],
        test_counts=[r["test_counts"] + [0] * (pad - len(r["test_counts"])) for r in records],
    )


def agree(transport: Transport, record: dict) -> Agreement:
    """Exchange each agent's record (a control message) and agree, or raise on every agent."""
    records = transport.all_gather_object(record, tag="control")
    return check_agreement(records)


def load_and_agree(
    spec: str, transport: Transport, *, seed: int, test_spec: str | None = None
) -> tuple[SiteData, Agreement]:
    """Load this agent's source and agree with the others; a failure stops every agent.

    A load error is not raised at once: it is sent to the others in place of the descriptor,
    so every agent stops with the same line instead of the others waiting for a timeout.
    """
    rank, world = transport.rank, transport.world_size
    site, error = None, None
    try:
        site = load_own(spec, test_spec, rank=rank, world=world, seed=seed)
    except DdlaError as exc:
        error = exc
    except Exception as exc:  # any failure reading it: the others must hear of it, not hang
        error = DataError(f"{type(exc).__name__}: {exc}")
    where = spec if site is None else str(site.path)
    if site is None:
        with contextlib.suppress(DdlaError):
            where = str(site_path(spec, rank=rank, world=world))
    agreement = agree(transport, describe_site(site, error, where))
    assert site is not None  # check_agreement raised on every agent otherwise
    return site, agreement


def agree_job(job: Job, transport: Transport) -> tuple[SiteData, Agreement]:
    """Resolve a Job's per-agent data (``train=lambda rank: ...``) and agree on it."""
    rank = transport.rank
    site, error = None, None
    try:
        x, y = job.train(rank) if callable(job.train) else job.train
        test = job.site_test(rank) if callable(job.site_test) else job.site_test
        for what, pair in (("train", (x, y)), ("site_test", test)):
            if pair is not None and (len(pair[0]) != len(pair[1]) or len(pair[0]) == 0):
                raise DataError(f"{what}: {len(pair[0])} samples but {len(pair[1])} labels")
        site = SiteData(
            path=Path(f"job.train({rank})"),
            train=(x, y),
            site_test=test,
            classes=tuple(job.classes or ()),
            stored_dtype=str(x.dtype).removeprefix("torch."),
        )
    except Exception as exc:  # the user's function failed: stop everyone with its message
        error = exc
    agreement = agree(transport, describe_site(site, error, f"job.train({rank})"))
    if job.test is not None and tuple(agreement.input_shape) != tuple(job.test[0].shape[1:]):
        raise DataError(
            f"the sites' samples have shape {agreement.input_shape} but the test set "
            f"{tuple(job.test[0].shape[1:])}",
            help="the shared test set must store the same feature layout as the sites",
        )
    assert site is not None
    return site, agreement
