"""A data-parallel replica: the whole model, this agent's batch, one optimizer step.

The strategy decides what synchronization follows the step (its optimizer post-hook) and
which module the forward runs through (``strategy.train_model``: a DDP wrapper for
``allreduce``), so every data-parallel strategy shares this one step. :class:`OptimizerStep`
is the frame every gradient step shares (batch, zero grads, forward + backward, optimizer
step); a pipeline stage replaces only its forward + backward with a schedule.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ddla.compute.base import Compute

if TYPE_CHECKING:
    import torch

    from ddla.sync import Strategy

Batch = tuple["torch.Tensor", "torch.Tensor"]


class OptimizerStep(Compute):
    """One gradient step on ``batch(step)``: :meth:`forward_backward` leaves the gradients of
    this agent's parameters and returns the loss; the optimizer step follows (the strategy
    synchronizes in its step post-hook)."""

    strategy: Strategy
    optimizer: torch.optim.Optimizer
    batch: Callable[[int], Batch]

    @property
    def model(self) -> torch.nn.Module:
        return self.strategy.model

    @abstractmethod
    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradients into this agent's parameters; the step's (detached) loss."""

    def __call__(self, step: int) -> torch.Tensor:
        x, y = self.batch(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward_backward(x, y)
        self.optimizer.step()  # the strategy synchronizes in its step post-hook
        return loss


class Replica(OptimizerStep):
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

    def summary(self) -> dict[str, Any]:
        return self.strategy.summary()

    def forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = self.loss(self.strategy.train_model(x), y)
        loss.backward()
        return loss.detach()
