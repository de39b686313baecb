"""The Strategy contract: how agents keep one model while each trains on its own data.

A strategy never owns the training loop. It is built around the agent's model and optimizer,
hooks the optimizer's step (a step post-hook, as torchft's LocalSGD does) and talks to peers only
through the :class:`~ddla.comm.Transport` and combines updates through an
:class:`~ddla.aggregate.Aggregator`, so byte accounting, link emulation, masking and auditing
see everything.
Pure math (averaging, pseudo-gradients, fragment schedules) lives in plain functions that need no
process group, so it can be tested alone.

Example (one agent, no peers — the same code path as N agents):

    >>> import torch
    >>> from ddla.sync import build_strategy, SyncConfig
    >>> from ddla.comm import Transport
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with Transport.single() as transport:
    ...     strategy = build_strategy(SyncConfig(strategy="allreduce"), transport=transport,
    ...                               model=model, optimizer=opt)
    ...     loss = strategy.train_model(torch.randn(8, 4)).sum()
    ...     loss.backward(); opt.step(); strategy.finish()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    import torch

    from ddla.aggregate import Protection
    from ddla.comm import Transport
    from ddla.sync.config import SyncConfig

T = TypeVar("T")


class Strategy:
    """Base class for synchronization strategies.

    Subclasses set ``name`` and override :meth:`after_step` (called after every optimizer step)
    and, when they keep state, :meth:`state_dict` / :meth:`load_state_dict`.
    """

    name: ClassVar[str] = "base"
    #: Inner optimizer used when the run leaves ``optim.name`` at "auto".
    default_optimizer: ClassVar[str] = "sgd"

    def __init__(
        self,
        *,
        transport: Transport,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        config: SyncConfig,
        protection: Protection | None = None,
    ) -> None:
        from ddla.aggregate import Aggregator
        from ddla.compress import build_compressor

        self.transport = transport
        #: Every mean this strategy takes goes through here (compressed, masked, audited).
        self.aggregator = Aggregator(
            transport,
            compressor=build_compressor(config.compress),
            scatter=config.quantized_reduce == "scatter",
            protection=protection,
        )
        self.compressor = self.aggregator.compressor
        self.model = model
        self.optimizer = optimizer
        self.config = config
        #: Optimizer steps taken since the run began (restored from checkpoints).
        self.local_step = 0
        #: The changing membership (``ddla.comm.elastic.ElasticGroup``) when the run survives
        #: lost agents; it replaces :attr:`transport` (and the aggregator's) on a change.
        self.elastic: Any = None
        self._hook = optimizer.register_step_post_hook(self._on_step)

    @property
    def train_model(self) -> torch.nn.Module:
        """The module the training loop calls forward on (a DDP wrapper for ``allreduce``)."""
        return self.model

    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.local_step += 1
        spans = getattr(self.transport, "spans", None)
        if spans is None or not spans.active:
            self.after_step()
            return
        with spans.span(f"ddla.sync.{self.name}", step=self.local_step):
            self.after_step()  # a profile's sync span: every strategy's, from this one hook

    def after_step(self) -> None:
        """Synchronize after an optimizer step, if this step calls for it."""

    def _collective(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (a synchronization's collectives); with :attr:`elastic`, a lost peer
        makes the survivors regroup and run it again among themselves."""
        return fn() if self.elastic is None else self.elastic.call(fn, step=self.local_step)

    def finish(self) -> None:
        """Called once after the last step: leave every agent with the final parameters."""

    def summary(self) -> dict[str, Any]:
        """Entries this strategy adds to ``summary.json`` (none by default)."""
        return {}

    def close(self) -> None:
        """Detach from the optimizer (the strategy must not act after this)."""
        self._hook.remove()

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint needs to continue this strategy exactly."""
        return {"local_step": self.local_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.local_step = int(state["local_step"])
