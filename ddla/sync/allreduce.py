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

With ``sync.compress`` set the hooks are those of :mod:`ddla.sync.ddp_hooks`: fp16/bf16
return the future of an asynchronous low-precision all-reduce of the whole bucket (like
PyTorch's ``fp16_compress_wrapper``); int8, int4, top-k, PowerSGD and chains queue each
bucket's :meth:`~ddla.aggregate.Aggregator.mean` on a communication thread over a second
process group and return its future (:class:`~ddla.sync.ddp_hooks.BackgroundBuckets`), so
buckets overlap backward and the gradients are bitwise those of the synchronous hook, which
stays the path for masked or audited means, a model whose replicas sync over a subgroup, and
``sync.background=never``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ddla.sync.base import Strategy
from ddla.sync.ddp_hooks import BackgroundBuckets, bucket_hook, compressed_hook


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
        #: The background hook's state (channel, in-flight buckets), when it is used.
        self._buckets: BackgroundBuckets | None = None
        if self.transport.world_size > 1:
            ddp = DistributedDataParallel(
                self.model,
                process_group=self.transport.group,
                # Parameters are identical at start (same seed) but broadcast anyway so a
                # user model built with a different seed per agent is still consistent.
                broadcast_buffers=True,
            )
            if self._background_hook():
                ddp.register_comm_hook(self._buckets, BackgroundBuckets.hook)
            elif self.config.compress != "none":
                ddp.register_comm_hook(self.aggregator, compressed_hook)
            elif self.aggregator.sees_payloads:
                ddp.register_comm_hook(self.aggregator, bucket_hook)
            else:
                self._grad_bytes = sum(
                    p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad
                )
            self._ddp = ddp

    def _background_hook(self) -> bool:
        """Open the communication thread for a compressor that is not a plain cast, unless
        ``sync.background=never`` or the means must stay on the training thread."""
        agg = self.aggregator
        if (
            self.config.background == "never"
            or self.config.compress == "none"
            or (agg.compressor.summable and getattr(agg.compressor, "wire_dtype", None))
            or agg.protection.masking is not None
            or agg.protection.audit is not None
            or not self.transport._run_wide  # replicas of a decomposed model: a subgroup
        ):
            return False
        from ddla.aggregate import Aggregator
        from ddla.comm.background import BackgroundChannel

        channel = BackgroundChannel(self.transport)
        # The same compressor object: its error-feedback state is only touched by the jobs.
        self._buckets = BackgroundBuckets(
            Aggregator(channel.transport, compressor=agg.compressor, scatter=agg.scatter), channel
        )
        return True

    @property
    def channel(self) -> Any:
        """The communication thread of the background hook (None when buckets are synchronous)."""
        return None if self._buckets is None else self._buckets.channel

    def close(self) -> None:
        super().close()
        if self._buckets is not None:
            self._buckets.close()

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
