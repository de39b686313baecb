"""Preprocessing agreed across agents (``data.preprocess``): one transform fitted on all shards.

``standardize`` (per-feature mean/std), ``minmax`` and ``pca:K`` (``pca:K:whiten``) are fitted
from moments every agent computes on its own shard — count, sum, centred sum of squares or the
centred scatter matrix, per-feature min/max — aggregated through the Transport's
:class:`~ddla.aggregate.Aggregator` (masked under secure aggregation), so no sample leaves its
agent and every agent applies the identical transform. The fitted transform is saved next to
the model (``model.preprocess.safetensors``, named in ``model.json``) and ``ddla eval``
applies it.

This package's ``__init__`` is torch-free (the config validates specs with it); the torch
parts are :mod:`.transform` (the transform and its file) and :mod:`.fit` (the joint fit).

Example:
    >>> parse_preprocess("pca:8:whiten")
    PreprocessSpec(kind='pca', k=8, whiten=True)
    >>> parse_preprocess("none") is None
    True
"""

from ddla.data.preprocess.spec import KINDS, PreprocessSpec, check_preprocess, parse_preprocess

__all__ = ["KINDS", "PreprocessSpec", "check_preprocess", "parse_preprocess"]
