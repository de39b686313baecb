"""``bulyan:F``: Krum-select ``θ = K - 2F`` updates, then a coordinate-wise trimmed mean
around the median of the selection.

El Mhamdi, Guerraoui & Rouault 2018, "The Hidden Vulnerability of Distributed Learning in
Byzantium", ICML, arXiv 1802.07927. Selection: repeatedly run Krum on the remaining updates
and move the winner to the selection, until ``θ`` are chosen. Aggregation: per coordinate,
the mean of the ``β = θ - 2F`` selected values closest to their median. Needs ``K >= 4F + 3``.

Example:
    >>> import torch
    >>> u = torch.tensor([[0.0], [0.1], [0.2], [0.3], [0.4], [0.5], [90.0]])
    >>> round(bulyan(u, f=1).item(), 4)
    0.2
"""

from __future__ import annotations

import torch

from ddla.aggregate.robust.krum import krum_scores


def bulyan(updates: torch.Tensor, *, f: int) -> torch.Tensor:
    """Bulyan aggregate of ``updates`` (shape ``[K, D]``) tolerating ``f`` Byzantine ones."""
    k = updates.shape[0]
    if k < 4 * f + 3:
        raise ValueError(f"bulyan:{f} needs at least {4 * f + 3} updates, got {k}")
    theta, beta = k - 2 * f, k - 4 * f
    remaining = list(range(k))
    chosen: list[int] = []
    while len(chosen) < theta:
        scores = krum_scores(updates[remaining], f=f)
        chosen.append(remaining.pop(int(scores.argmin())))
    sel = updates[chosen]
    med = sel.double().quantile(0.5, dim=0)
    closest = (sel.double() - med).abs().argsort(dim=0, stable=True)[:beta]
    return sel.gather(0, closest).mean(dim=0)
