"""``krum:F`` and ``multikrum:F,M``: keep the update(s) closest to their neighbours.

Blanchard, El Mhamdi, Guerraoui & Stainer 2017, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent", NeurIPS. Each update's score is the sum of squared distances to
its ``K - F - 2`` nearest other updates; Krum returns the update with the lowest score,
Multi-Krum the mean of the ``M`` lowest. Krum's guarantee needs ``K > 2F + 2``.

Example:
    >>> import torch
    >>> u = torch.tensor([[0.0], [1.0], [2.0], [3.0], [50.0]])
    >>> krum(u, f=1).tolist()
    [1.0]
"""

from __future__ import annotations

import torch


def krum_scores(updates: torch.Tensor, *, f: int) -> torch.Tensor:
    """Krum score of each of the ``K`` updates (shape ``[K]``)."""
    k = updates.shape[0]
    x = updates.double()
    dist = torch.cdist(x, x).pow(2)
    closest = max(1, k - f - 2)
    # Row i sorted: the first entry is the distance to itself (0); skip it.
    return dist.sort(dim=1).values[:, 1 : closest + 1].sum(dim=1)


def multikrum(updates: torch.Tensor, *, f: int, m: int) -> torch.Tensor:
    """Mean of the ``m`` updates with the lowest Krum scores."""
    if not 1 <= m <= updates.shape[0]:
        raise ValueError(f"multikrum keeps m={m} of {updates.shape[0]} updates")
    keep = krum_scores(updates, f=f).argsort(stable=True)[:m]
    return updates[keep].mean(dim=0)


def krum(updates: torch.Tensor, *, f: int) -> torch.Tensor:
    """The update with the lowest Krum score."""
    return multikrum(updates, f=f, m=1)
