"""Synchronous data-parallel SGD: gradients are averaged across agents every step.

This is PyTorch's :class:`~torch.nn.parallel.DistributedDataParallel` (bucketed all-reduce that
overlaps backward). With one agent there is nothing to average and the model is used as is.

Two paths, chosen by what must see the gradients:

- **Fast path** (no compression, and an aggregator that need not see payloads: no link
  emulation, no secure aggregation, no audit): DDP's built-in C++ all-reduce, and the
  Transport *accounts* one all-reduce of the gradient bytes per step (same ring model). Any
  Python communication hook costs a GIL hand-off per bucket from gloo's thread
  (``benchmarks/ddp_hook_cost.py``, 4 agents on 2 cores: +5% per step, ~+33% under heavy
  load; nothing measurable at 2 agents).
  Here the Transport measures no in-flight time: the all-reduce overlaps backward inside DDP.
- **Hook path**: a communication hook routes every bucket through the
  :class:`~ddla.aggregate.Aggregator` (``bucket_sum``: the Transport's ``all_reduce_async``),
  so link emulation delays it, secure aggregation masks it, the audit log records it, and its
  time in flight is measured.

With ``sync.compress=fp16``/``bf16`` the hook returns the future of an asynchronous
low-precision all-reduce of the whole bucket (:meth:`~ddla.aggregate.Aggregator.
bucket_mean_summable`, like PyTorch's ``fp16_compress_wrapper``), so buckets overlap backward.
Other compressors average each bucket's per-parameter gradients with
:meth:`~ddla.aggregate.Aggregator.mean` (int8/int4 as a reduce-scatter + all-gather of
quantized chunks, top-k/PowerSGD as an all-gather of payloads, error feedback keyed per bucket
and parameter); that call is synchronous, so those buckets do not overlap backward (and masked
fp16/bf16 buckets neither: masking needs the whole bucket).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ddla.sync.base import Strategy

if TYPE_CHECKING:
    from ddla.aggregate import Aggregator


# DDP inspects the hook's signature and rejects string annotations (this module uses postponed
# evaluation), so ``bucket`` and the return value stay unannotated: GradBucket -> Future[Tensor].
def _bucket_hook(aggregator: Aggregator, bucket):
    """DDP comm hook: mean of the bucket's gradients over agents, through the aggregator."""
    buffer = bucket.buffer()
    # Divide before summing (as DDP's default hook does) so fp32 sums stay in range.
    buffer.div_(aggregator.transport.world_size)
    return aggregator.bucket_sum(buffer, tag="train")


def _compressed_hook(aggregator: Aggregator, bucket):  # see the note above
    """DDP comm hook: mean of the bucket's gradients through the aggregator's compressor."""
    future = aggregator.bucket_mean_summable(bucket.buffer(), tag="train")
    if future is not None:  # fp16/bf16: asynchronous, overlaps the rest of backward
        return future
    grads = bucket.gradients()
    # DDP may rebuild buckets after the first step; keys carry the index and the stateful
    # compressors reset a key's state when its shape changes.
    keys = [f"b{bucket.index()}.{i}" for i in range(len(grads))]
    mean = aggregator.mean(grads, keys=keys, tag="train")
    buffer = bucket.buffer()
    buffer.copy_(torch.cat([m.reshape(-1) for m in mean]).to(buffer.dtype))
    done: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    done.set_result(buffer)
    return done


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
        self._grad_bytes = 0
        if self.transport.world_size > 1:
            ddp = DistributedDataParallel(
                self.model,
                process_group=self.transport.group,
                # Parameters are identical at start (same seed) but broadcast anyway so a
                # user model built with a different seed per agent is still consistent.
                broadcast_buffers=True,
            )
            if self.config.compress != "none":
                ddp.register_comm_hook(self.aggregator, _compressed_hook)
            elif self.aggregator.sees_payloads:
                ddp.register_comm_hook(self.aggregator, _bucket_hook)
            else:
                self._grad_bytes = sum(
                    p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad
                )
            self._ddp = ddp

    def after_step(self) -> None:
        if self._grad_bytes:  # fast path: DDP's C++ all-reduce ran inside backward
            self.transport.account("all_reduce", self._grad_bytes, tag="train")

    @property
    def train_model(self) -> torch.nn.Module:
        return self._ddp if self._ddp is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "compressor": self.compressor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.compressor.load_state_dict(state.get("compressor", {}))
