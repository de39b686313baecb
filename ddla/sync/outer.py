"""The outer-loop math shared by local SGD, DiLoCo and streaming DiLoCo (no process group).

DiLoCo (Douillard et al. 2023, arXiv 2311.08105) keeps, besides each agent's working
parameters, a *global copy* identical on all agents. Every H inner steps each agent computes the
pseudo-gradient ``global - local``; its mean over agents is applied to the global copy by an
outer optimizer (SGD with Nesterov momentum, lr 0.7, momentum 0.9), and the agents restart from
the result. With outer lr 1 and no momentum the global copy becomes the mean of the agents'
parameters: local SGD (model averaging, Stich 2019, arXiv 1805.09767).

Example:
    >>> import torch
    >>> anchor = [torch.zeros(2)]
    >>> opt = build_outer_optimizer(anchor, lr=1.0, momentum=0.0)
    >>> g = pseudo_gradient(anchor, [torch.tensor([1.0, 3.0])])
    >>> outer_step(opt, anchor, g)
    >>> anchor[0].tolist()
    [1.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def average(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean of same-shaped tensors (the model average local SGD computes), in fp32."""
    out = torch.zeros_like(tensors[0], dtype=torch.float32)
    for t in tensors:
        out += t.float()
    return out / len(tensors)


def pseudo_gradient(
    anchor: Sequence[torch.Tensor], params: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """``anchor - params`` per tensor: the direction the inner steps moved, as a gradient."""
    return [a.detach().float() - p.detach().float() for a, p in zip(anchor, params, strict=True)]


def build_outer_optimizer(
    anchor: Sequence[torch.Tensor], *, lr: float, momentum: float
) -> torch.optim.SGD:
    """The outer optimizer over the global copy: Nesterov SGD (plain SGD when momentum is 0)."""
    return torch.optim.SGD(list(anchor), lr=lr, momentum=momentum, nesterov=momentum > 0)


def outer_step(
    optimizer: torch.optim.Optimizer,
    anchor: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
) -> None:
    """Apply averaged pseudo-gradients to (some of) the global copy.

    Tensors of the optimizer not in ``anchor`` keep ``grad=None`` and are skipped by SGD, so a
    streaming fragment's step leaves the other fragments and their momentum untouched.
    """
    for a, g in zip(anchor, grads, strict=True):
        a.grad = g.to(a.dtype).view_as(a)
    optimizer.step()
    for a in anchor:
        a.grad = None


def mix(local: torch.Tensor, global_: torch.Tensor, alpha: float) -> None:
    """In place ``local = alpha * local + (1 - alpha) * global_`` (streaming DiLoCo's merge)."""
    local.mul_(alpha).add_(global_.to(local.dtype), alpha=1 - alpha)
