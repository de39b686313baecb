"""Synchronous data-parallel SGD: gradients are averaged across agents every step.

This is PyTorch's :class:`~torch.nn.parallel.DistributedDataParallel` (bucketed all-reduce that
overlaps backward) with a communication hook that routes every bucket through the ddla
Transport, so the bytes and time it spends are accounted like any other strategy's. With one
agent there is nothing to average and the model is used as is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ddla.sync.base import Strategy

if TYPE_CHECKING:
    from ddla.comm import Transport


# DDP inspects the hook's signature and rejects string annotations (this module uses postponed
# evaluation), so ``bucket`` and the return value stay unannotated: GradBucket -> Future[Tensor].
def _transport_allreduce_hook(transport: Transport, bucket):
    """DDP comm hook: mean of the bucket's gradients over agents, through the Transport."""
    buffer = bucket.buffer()
    # Divide before summing (as DDP's default hook does) so fp32 sums stay in range.
    buffer.div_(transport.world_size)
    return transport.all_reduce_async(buffer, tag="train")


class AllReduce(Strategy):
    """Average gradients every step with DDP; equivalent to one big-batch SGD.

    Example:
        >>> from ddla.sync import SyncConfig
        >>> SyncConfig(strategy="allreduce").every
        1
    """

    name = "allreduce"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ddp: torch.nn.Module | None = None
        if self.transport.world_size > 1:
            ddp = DistributedDataParallel(
                self.model,
                process_group=self.transport.group,
                # Parameters are identical at start (same seed) but broadcast anyway so a
                # user model built with a different seed per agent is still consistent.
                broadcast_buffers=True,
            )
            ddp.register_comm_hook(self.transport, _transport_allreduce_hook)
            self._ddp = ddp

    @property
    def train_model(self) -> torch.nn.Module:
        return self._ddp if self._ddp is not None else self.model
