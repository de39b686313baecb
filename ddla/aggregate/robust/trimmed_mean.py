"""``trimmed_mean:BETA``: per coordinate, drop the ``floor(BETA*K)`` largest and smallest
values and average the rest.

Yin, Chen, Ramchandran & Bartlett 2018, "Byzantine-Robust Distributed Learning: Towards
Optimal Statistical Rates", ICML, arXiv 1803.01498 (the coordinate-wise trimmed mean).

Example:
    >>> import torch
    >>> trimmed_mean(torch.tensor([[1.0], [2.0], [3.0], [100.0]]), beta=0.25).tolist()
    [2.5]
"""

from __future__ import annotations

import math

import torch


def trimmed_count(k: int, beta: float) -> int:
    """How many values are cut from each end for ``k`` updates."""
    return math.floor(beta * k)


def trimmed_mean(updates: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Coordinate-wise ``beta``-trimmed mean of ``updates`` (shape ``[K, D]``)."""
    k = updates.shape[0]
    cut = trimmed_count(k, beta)
    if 2 * cut >= k:
        raise ValueError(f"trimmed_mean:{beta} cuts {2 * cut} of {k} updates: nothing is left")
    ordered = updates.sort(dim=0).values
    return ordered[cut : k - cut].mean(dim=0)
