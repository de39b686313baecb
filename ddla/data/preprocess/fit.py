"""Fit one transform on every agent's shard from moments only (collective).

Each agent reduces its shard to moments and the agents sum those through the
:class:`~ddla.aggregate.Aggregator` under tag ``preprocess`` (masked when secure aggregation is
on); no sample, and no per-agent moment in the clear under masking, leaves an agent:

* ``standardize``: the count (8 bytes), then the sum divided by the total count (the global
  mean, D float64), then the sum of squares *about that mean* over the total count (the
  population variance, D float64). Two passes rather than E[x^2] - mean^2: the difference of
  two large numbers loses the digits a near-constant feature has.
* ``pca:K``: count, mean, then the upper triangle of the centred scatter matrix over the total
  count (D(D+1)/2 float64); every agent takes the same eigendecomposition of the same sum.
* ``minmax``: one max all-reduce of ``[-min, max]`` (2D float64); refused under secure
  aggregation (a maximum is not a sum that masks can hide).

Dividing by the total count before summing keeps each value near the data's own scale, inside
secure aggregation's fixed-point range (sums of squares of 60 000 Fashion-MNIST pixels would
not be). The wire payload is therefore exactly: 8 + 8D + 8D bytes (standardize), 8 + 8D +
8D(D+1)/2 (pca), 16D (minmax), each moved as one ring all-reduce.

Example (one agent: the statistics of its own data):

    >>> import torch
    >>> from ddla.comm import Transport
    >>> from ddla.data.preprocess import parse_preprocess
    >>> x = torch.tensor([[0.0, 1.0], [2.0, 1.0]])
    >>> with Transport.single() as t:
    ...     tr = fit_transform(parse_preprocess("standardize"), x, t)
    >>> tr.shift.tolist(), tr.scale.tolist()
    ([1.0, 1.0], [1.0, 1.0])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ddla.aggregate import Aggregator
from ddla.data.preprocess.transform import Transform, inverse_spread, top_components
from ddla.errors import ConfigError

if TYPE_CHECKING:
    from ddla.aggregate import Protection
    from ddla.comm import Transport
    from ddla.data.preprocess.spec import PreprocessSpec

TAG = "preprocess"


def payload_bytes(spec: PreprocessSpec, features: int) -> list[int]:
    """Bytes of each all-reduce :func:`fit_transform` makes for ``features`` inputs."""
    d = features
    if spec.kind == "minmax":
        return [16 * d]
    second = 8 * d if spec.kind == "standardize" else 8 * d * (d + 1) // 2
    return [8, 8 * d, second]


def _sum(agg: Aggregator, local: torch.Tensor) -> torch.Tensor:
    # The Aggregator averages; W times each contribution averages to the sum.
    return agg.mean_(local * agg.transport.world_size, tag=TAG)


def fit_transform(
    spec: PreprocessSpec,
    x: torch.Tensor,
    transport: Transport,
    *,
    protection: Protection | None = None,
) -> Transform:
    """The transform of ``spec`` fitted on every agent's ``x`` together (collective)."""
    agg = Aggregator(transport, protection=protection)
    shape = tuple(int(s) for s in x.shape[1:])
    flat = x.reshape(len(x), -1).to(torch.float64)
    d = flat.shape[1]
    if spec.kind == "pca" and (spec.k or 0) > d:
        raise ConfigError(
            f"data.preprocess={spec}: {spec.k} components of {d} features",
            help=f"choose K <= {d}",
        )
    if spec.kind == "minmax":
        if agg.secure:
            raise ConfigError(
                "data.preprocess=minmax cannot run under security.secure_aggregation: the "
                "masks protect sums, and a per-feature min/max is not a sum",
                help="use data.preprocess=standardize, or turn off secure aggregation",
            )
        ext = torch.cat([-flat.min(dim=0).values, flat.max(dim=0).values])
        transport.all_reduce(ext, op="max", tag=TAG)
        lo, hi = -ext[:d], ext[d:]
        return Transform(kind=str(spec), input_shape=shape, shift=lo, scale=inverse_spread(hi - lo))
    total = _sum(agg, torch.tensor([float(len(flat))], dtype=torch.float64))
    n = float(total.item())
    mean = _sum(agg, flat.sum(dim=0) / n)
    centred = flat - mean
    if spec.kind == "standardize":
        var = _sum(agg, (centred * centred).sum(dim=0) / n)
        return Transform(
            kind=str(spec),
            input_shape=shape,
            shift=mean,
            scale=inverse_spread(var.clamp_min(0).sqrt()),
            count=round(n),
        )
    rows, cols = torch.triu_indices(d, d)
    upper = _sum(agg, (centred.T @ centred)[rows, cols] / n)
    cov = torch.zeros(d, d, dtype=torch.float64)
    cov[rows, cols] = upper
    cov[cols, rows] = upper
    assert spec.k is not None
    return Transform(
        kind=str(spec),
        input_shape=shape,
        shift=mean,
        scale=torch.ones(d, dtype=torch.float64),
        components=top_components(cov, spec.k, whiten=spec.whiten),
        count=round(n),
    )
