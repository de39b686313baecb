"""Norm clipping of one client update: ``u * min(1, S / ||u||_2)``.

Sun, Kairouz, Suresh & McMahan 2019, "Can You Really Backdoor Federated Learning?",
arXiv 1911.07963 (norm bounding as a defence); the same clip bounds each client's
contribution in DP-FedAvg (McMahan et al. 2018, arXiv 1710.06963).

Example:
    >>> import torch
    >>> clip_norm(torch.tensor([3.0, 4.0]), 1.0).tolist()
    [0.6000000238418579, 0.800000011920929]
"""

from __future__ import annotations

import torch


def clip_norm(update: torch.Tensor, bound: float) -> torch.Tensor:
    """``update`` scaled to L2 norm at most ``bound`` (a new tensor; unchanged if within)."""
    norm = float(update.double().norm())
    return update * min(1.0, bound / norm) if norm > 0 else update.clone()
