"""A fitted preprocessing transform: ``y = ((x - shift) * scale) @ components``, and its file.

One shape for all three kinds: ``standardize`` (shift = mean, scale = 1/std), ``minmax``
(shift = min, scale = 1/(max - min)) and ``pca`` (shift = mean, scale = 1, components the top
K eigenvectors of the covariance, divided by sqrt(eigenvalue) when whitened). Features with no
spread (std or range 0) keep scale 1, so a constant pixel maps to 0 rather than NaN. It is
applied in float64 and returns float32, the datasets' dtype.

Saved as a safetensors file (tensors plus the spec and shapes in its metadata); ``model.json``
names it under ``"preprocess"``.

Example:
    >>> import torch, tempfile, pathlib
    >>> t = Transform(kind="standardize", input_shape=(2,), shift=torch.tensor([1.0, 2.0],
    ...     dtype=torch.float64), scale=torch.tensor([0.5, 1.0], dtype=torch.float64))
    >>> t(torch.tensor([[3.0, 2.0]])).tolist()
    [[1.0, 0.0]]
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "p.safetensors"
    >>> Transform.load(t.save(path)).output_shape
    (2,)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ddla.errors import DataError


@dataclass(kw_only=True)
class Transform:
    """A transform every agent holds alike (see the module docstring)."""

    kind: str
    """``standardize``, ``minmax`` or ``pca:K`` / ``pca:K:whiten`` (the spec it was fitted for)."""
    input_shape: tuple[int, ...]
    shift: torch.Tensor
    scale: torch.Tensor
    components: torch.Tensor | None = None
    """``[D, K]`` for PCA."""
    count: int = 0
    """Samples the statistics came from (all agents together)."""

    @property
    def output_shape(self) -> tuple[int, ...]:
        if self.components is not None:
            return (int(self.components.shape[1]),)
        return self.input_shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a batch ``[N, *input_shape]`` into ``[N, *output_shape]`` (float32)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"preprocess {self.kind}: inputs of shape {tuple(x.shape[1:])}, fitted on "
                f"{self.input_shape}",
                help="apply the transform to the data it was fitted for",
            )
        flat = (x.reshape(len(x), -1).to(torch.float64) - self.shift) * self.scale
        if self.components is not None:
            flat = flat @ self.components
        return flat.to(torch.float32).reshape(len(x), *self.output_shape)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"shift": self.shift, "scale": self.scale}
        if self.components is not None:
            out["components"] = self.components
        return out

    def describe(self) -> dict[str, Any]:
        """What ``model.json`` records of it."""
        return {
            "kind": self.kind,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "count": self.count,
        }

    def save(self, path: str | Path) -> Path:
        """Write the safetensors file (atomically); return its path."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        meta = {k: str(v) for k, v in self.describe().items()}
        save_file({k: v.contiguous() for k, v in self.tensors().items()}, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Transform:
        """Read a file written by :meth:`save`."""
        from safetensors import safe_open

        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            shape = tuple(int(v) for v in meta["input_shape"].strip("[]").split(",") if v.strip())
            return cls(
                kind=meta["kind"],
                input_shape=shape,
                shift=tensors["shift"],
                scale=tensors["scale"],
                components=tensors.get("components"),
                count=int(meta.get("count", 0)),
            )
        except (SafetensorError, OSError, KeyError, ValueError) as exc:
            raise DataError(
                f"cannot read the preprocessing transform {path}: {exc}",
                help="it is written next to model.safetensors by ddla run; keep them together",
            ) from exc

    def equal(self, other: Transform) -> bool:
        """Bitwise the same transform (what every agent must hold)."""
        mine, theirs = self.tensors(), other.tensors()
        return (
            self.kind == other.kind
            and self.input_shape == other.input_shape
            and mine.keys() == theirs.keys()
            and all(torch.equal(mine[k], theirs[k]) for k in mine)
        )


def inverse_spread(spread: torch.Tensor) -> torch.Tensor:
    """1/spread, with 1 where a feature has no spread (constant features map to 0)."""
    return torch.where(spread > 0, 1.0 / torch.where(spread > 0, spread, 1.0), 1.0)


def top_components(cov: torch.Tensor, k: int, *, whiten: bool) -> torch.Tensor:
    """The top ``k`` eigenvectors of a symmetric ``cov`` as ``[D, k]`` columns, largest
    eigenvalue first, each signed so its largest-magnitude entry is positive (eigenvectors are
    defined up to sign; this makes the fit reproducible); divided by sqrt(eigenvalue) when
    ``whiten``."""
    values, vectors = torch.linalg.eigh(cov)
    order = torch.argsort(values, descending=True)[:k]
    values, vectors = values[order], vectors[:, order]
    pivot = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[pivot, torch.arange(vectors.shape[1])])
    vectors = vectors * torch.where(signs == 0, 1.0, signs)
    if whiten:
        floor = values.clamp_min(0).max().item() * 1e-12 + math.ulp(1.0)
        vectors = vectors / values.clamp_min(floor).sqrt()
    return vectors
