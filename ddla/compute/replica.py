"""A data-parallel replica: the whole model, this agent's batch, one optimizer step.

The strategy decides what synchronization follows the step (its optimizer post-hook) and
which module the forward runs through (``strategy.train_model``: a DDP wrapper for
``allreduce``), so every data-parallel strategy shares this one step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ddla.compute.base import Compute

if TYPE_CHECKING:
    import torch

    from ddla.sync import Strategy

Batch = tuple["torch.Tensor", "torch.Tensor"]


class Replica(Compute):
    """Forward, loss, backward and optimizer step on ``batch(step)``."""

    name = "replica"

    def __init__(
        self,
        *,
        strategy: Strategy,
        optimizer: torch.optim.Optimizer,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        batch: Callable[[int], Batch],
    ) -> None:
        self.strategy, self.optimizer, self.loss, self.batch = strategy, optimizer, loss, batch

    @property
    def model(self) -> torch.nn.Module:
        return self.strategy.model

    def __call__(self, step: int) -> torch.Tensor:
        x, y = self.batch(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.strategy.train_model(x), y)
        loss.backward()
        self.optimizer.step()  # the strategy synchronizes in its step post-hook
        return loss.detach()
