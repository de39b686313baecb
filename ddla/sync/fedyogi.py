"""``fedyogi``: adaptive server optimizer (FedOpt with Yogi).

Reddi et al. 2021, "Adaptive Federated Optimization", ICLR, arXiv 2003.00295 (Algorithm 2,
FedYogi): as :mod:`ddla.sync.fedadam` but the second moment moves additively, by at most
(1 - β2) Δ_t² per round, which keeps it from growing too fast (Zaheer et al. 2018):

    v_t = v_{t-1} - (1 - β2) Δ_t² sign(v_{t-1} - Δ_t²)

Example:
    >>> from ddla.sync import STRATEGIES
    >>> STRATEGIES["fedyogi"].federated
    True
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ddla.sync.fedadam import FedAdam


class FedYogi(FedAdam):
    """Yogi's additive second-moment update at the server."""

    name: ClassVar[str] = "fedyogi"

    def second_moment(self, v: torch.Tensor, delta: torch.Tensor, beta2: float) -> torch.Tensor:
        d2 = delta.square()
        return v - (1 - beta2) * d2 * torch.sign(v - d2)
