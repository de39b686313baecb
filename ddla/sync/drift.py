"""``sync.drift=scaffold``: SCAFFOLD's control variates in DiLoCo's inner loop, at no extra bytes.

Karimireddy, Kale, Mohri, Reddi, Stich & Suresh 2020, "SCAFFOLD: Stochastic Controlled
Averaging for Federated Learning" (ICML, arXiv 1910.06378), Algorithm 1 with option II and
every client taking part in every round. Agent i keeps a control variate c_i, every agent the
same c; each inner step is corrected by ``c - c_i`` (the agent's estimated drift away from the
mean direction), and after a round of inner steps with learning rates η_1..η_K:

    c_i⁺ = c_i - c + Δ_i / Σ_k η_k          Δ_i = global - local_i (this agent's pseudo-gradient)
    c⁺   = c + mean_i(c_i⁺ - c_i) = mean_i(Δ_i) / Σ_k η_k

(Σ η_k is the paper's K·η_l; a learning-rate schedule changes it round to round). With every
client taking part, c⁺ needs only the mean pseudo-gradient, which DiLoCo already averages: the
correction sends nothing more (SCAFFOLD as a federated strategy, :mod:`ddla.sync.scaffold`, sends
Δc_i too because it samples clients). The mean is the compressed one every agent decodes alike,
so c stays identical on all agents; Δ_i is the agent's own exact pseudo-gradient.

The inner optimizer here is usually AdamW, not the paper's SGD: the correction is applied to the
parameters after the optimizer's step (``p ← p - η (c - c_i)``), in the same units as the
pseudo-gradients it is estimated from (displacement per unit of learning rate), so the
preconditioned direction the agent moves in is the one corrected.

Example:
    >>> import torch
    >>> local, global_ = update_variates(
    ...     [torch.zeros(2)], [torch.zeros(2)],
    ...     delta=[torch.tensor([2.0, 0.0])], mean=[torch.tensor([1.0, 1.0])], lr_sum=2.0)
    >>> local[0].tolist(), global_[0].tolist()
    ([1.0, 0.0], [0.5, 0.5])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

#: ``sync.drift`` values.
DRIFT = ("none", "scaffold")


def update_variates(
    local: Sequence[torch.Tensor],
    global_: Sequence[torch.Tensor],
    *,
    delta: Sequence[torch.Tensor],
    mean: Sequence[torch.Tensor],
    lr_sum: float,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """SCAFFOLD option II after one round, every client taking part: ``(c_i⁺, c⁺)``."""
    new_local = [
        ci - c + d.float() / lr_sum for ci, c, d in zip(local, global_, delta, strict=True)
    ]
    return new_local, [m.float() / lr_sum for m in mean]


class DriftCorrection:
    """Control variates of one agent over the tensors ``views`` (the parameters DiLoCo syncs).

    ``groups`` is each view's optimizer param group (its learning rate at every step). Call
    :meth:`inner_step` after every optimizer step and :meth:`after_sync` with the pseudo-
    gradient this agent sent and the mean every agent received.
    """

    def __init__(self, views: Sequence[torch.Tensor], groups: Sequence[dict[str, Any]]) -> None:
        self.views = list(views)
        self.groups = list(groups)
        self.local = [torch.zeros(v.shape, dtype=torch.float32) for v in self.views]
        self.global_ = [torch.zeros(v.shape, dtype=torch.float32) for v in self.views]
        #: c - c_i per tensor (what every inner step subtracts, times its learning rate).
        self.correction: list[torch.Tensor] | None = None
        #: Σ η_k per tensor since the last sync.
        self.lr_sum = [0.0] * len(self.views)

    @torch.no_grad()
    def inner_step(self) -> None:
        for i, (view, group) in enumerate(zip(self.views, self.groups, strict=True)):
            lr = float(group["lr"])
            self.lr_sum[i] += lr
            if self.correction is not None:
                view.sub_(self.correction[i].to(view.dtype), alpha=lr)

    @torch.no_grad()
    def after_sync(self, delta: Sequence[torch.Tensor], mean: Sequence[torch.Tensor]) -> None:
        total = self.lr_sum
        self.lr_sum = [0.0] * len(self.views)
        if not all(s > 0 for s in total):
            return  # no inner step since the last sync (or a zero learning rate): nothing learnt
        for i in range(len(self.views)):
            (ci,), (c,) = update_variates(
                [self.local[i]], [self.global_[i]], delta=[delta[i]], mean=[mean[i]],
                lr_sum=total[i],
            )  # fmt: skip
            self.local[i], self.global_[i] = ci, c
        self.correction = [c - ci for c, ci in zip(self.global_, self.local, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        return {"local": [t.clone() for t in self.local],
                "global": [t.clone() for t in self.global_],
                "lr_sum": list(self.lr_sum), "active": self.correction is not None}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.local = [t.clone().float() for t in state["local"]]
        self.global_ = [t.clone().float() for t in state["global"]]
        self.lr_sum = [float(s) for s in state["lr_sum"]]
        self.correction = (
            [c - ci for c, ci in zip(self.global_, self.local, strict=True)]
            if state["active"]
            else None
        )
