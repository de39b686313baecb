"""The Compute contract: how one step of the run executes on this agent.

The agent loop (:func:`ddla.agent.train`) owns the run — data, checkpoints, evaluation,
progress — and calls one :class:`Compute` per step; *what* a step is depends on the agent's
role: a data-parallel replica runs forward/backward/optimizer step on its batch
(:class:`~ddla.compute.replica.Replica`); a pipeline stage runs its part of a microbatch
schedule; a federated client host trains its sampled clients for one round. Synchronization
stays in the strategy (an optimizer step post-hook), so a Compute never talks to peers except
through a Transport (e.g. activations between stages) and an Aggregator.

Example (one agent, the same code path as N):

    >>> import torch
    >>> from ddla.comm import Transport
    >>> from ddla.compute import Replica
    >>> from ddla.sync import SyncConfig, build_strategy
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    >>> with Transport.single() as t:
    ...     s = build_strategy(SyncConfig(), transport=t, model=model, optimizer=opt)
    ...     step = Replica(strategy=s, optimizer=opt, loss=torch.nn.functional.cross_entropy,
    ...                    batch=lambda i: (x, y))
    ...     loss = step(0)
    >>> bool(loss > 0)
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch


class Compute(ABC):
    """One step of this agent's work; the training loop's only call into training."""

    #: Registry name (``COMPUTES``).
    name: ClassVar[str] = "base"

    @abstractmethod
    def __call__(self, step: int) -> torch.Tensor:
        """Run step ``step`` (0-based) and return its training loss (a 0-d tensor)."""

    @property
    @abstractmethod
    def model(self) -> torch.nn.Module:
        """This agent's model as evaluation, merging and export see it."""

    def summary(self) -> dict[str, Any]:
        """Entries this Compute adds to ``summary.json`` (none by default)."""
        return {}

    def agent_stats(self) -> dict[str, Any]:
        """Figures of this agent gathered from every agent of a decomposed run (none by
        default)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs beyond model, optimizer and strategy (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (stateless default)
        """Restore :meth:`state_dict`."""
