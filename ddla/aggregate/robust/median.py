"""``median``: coordinate-wise median of the client updates.

Yin, Chen, Ramchandran & Bartlett 2018, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", ICML, arXiv 1803.01498. With an even number of updates the two
middle values are averaged (as ``numpy.median`` and Flower's ``aggregate_median`` do).

Example:
    >>> import torch
    >>> median(torch.tensor([[1.0, 10.0], [2.0, -5.0], [100.0, 0.0]])).tolist()
    [2.0, 0.0]
"""

from __future__ import annotations

import torch


def median(updates: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median of ``updates`` (shape ``[K, D]``)."""
    return torch.quantile(updates.double(), 0.5, dim=0).to(updates.dtype)
