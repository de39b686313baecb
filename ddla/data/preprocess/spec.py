"""``data.preprocess`` specs and the run-wide rules that refuse what cannot be covered (no torch).

Example:
    >>> parse_preprocess("standardize")
    PreprocessSpec(kind='standardize', k=None, whiten=False)
    >>> str(parse_preprocess("pca:4"))
    'pca:4'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ddla.errors import ConfigError

if TYPE_CHECKING:
    from ddla.config import RunConfig

KINDS = ("none", "standardize", "minmax", "pca:K", "pca:K:whiten")
_HELP = "use none, standardize, minmax, pca:K or pca:K:whiten (K >= 1 components)"


@dataclass(frozen=True, slots=True)
class PreprocessSpec:
    """What to fit: ``kind`` (``standardize``, ``minmax``, ``pca``), ``k`` components for PCA,
    ``whiten`` (PCA outputs of unit variance)."""

    kind: str
    k: int | None = None
    whiten: bool = False

    def __str__(self) -> str:
        if self.kind != "pca":
            return self.kind
        return f"pca:{self.k}" + (":whiten" if self.whiten else "")


def parse_preprocess(spec: str) -> PreprocessSpec | None:
    """``"none"`` -> None; otherwise the :class:`PreprocessSpec`. Raises ConfigError."""
    if spec in ("none", ""):
        return None
    if spec in ("standardize", "minmax"):
        return PreprocessSpec(kind=spec)
    parts = spec.split(":")
    width_ok = len(parts) in (2, 3) and parts[1].isdigit() and int(parts[1]) >= 1
    if parts[0] == "pca" and width_ok and (len(parts) == 2 or parts[2] == "whiten"):
        return PreprocessSpec(kind="pca", k=int(parts[1]), whiten=len(parts) == 3)
    raise ConfigError(f"data.preprocess: cannot read {spec!r}", help=_HELP)


def check_preprocess(config: RunConfig) -> None:
    """Cross-section rules of ``data.preprocess`` (called by RunConfig validation).

    * ``minmax`` under secure aggregation: masks protect sums, and a maximum is no sum.
    * ``pca`` changes the input width: a decomposed model (stages, shards) is cut from the
      raw-width architecture before the data is seen.
    * shared pools and pulls bring peers' rows: their statistics would count twice.
    """
    spec = parse_preprocess(config.data.preprocess)
    if spec is None:
        return
    if spec.kind == "minmax" and config.security.secure_aggregation:
        raise ConfigError(
            "data.preprocess=minmax cannot run under security.secure_aggregation: the masks "
            "protect sums, and a per-feature min/max is not a sum",
            help="use data.preprocess=standardize (its moments are sums), or turn off "
            "security.secure_aggregation",
        )
    if spec.kind == "pca" and config.model.decomposed:
        raise ConfigError(
            f"data.preprocess={spec} changes the input width to {spec.k}, and model.stages / "
            "model.tensor_parallel cut the model before the data is fitted",
            help="use standardize or minmax with a decomposed model",
        )
    if config.data.share.startswith("shared") or config.data.pull_every:
        raise ConfigError(
            f"data.preprocess={spec} fits on each agent's own shard; data.share=shared:F and "
            "data.pull_every mix peers' raw rows into it",
            help="use data.share=features:F (the shared pool then carries extracted features), "
            "or unset data.preprocess",
        )
