"""DDP communication hooks of ``allreduce``: every bucket through the Aggregator.

Three hooks, chosen by :class:`~ddla.sync.allreduce.AllReduce`:

- :func:`bucket_hook` (no compression, but payloads must pass through Python: link emulation,
  masking, audit): the bucket is summed by the Transport's asynchronous all-reduce.
- :func:`compressed_hook` (``sync.compress`` set): fp16/bf16 return the future of an
  asynchronous low-precision all-reduce of the whole bucket (like PyTorch's
  ``fp16_compress_wrapper``). Any other compressor (int8, int4, top-k, PowerSGD, chains)
  averages the bucket's gradients with :meth:`~ddla.aggregate.Aggregator.mean`, synchronously
  inside the hook: the bucket pipeline stops there. It is the path when means are masked or
  audited (the training thread owns masks and the audit chain) and with
  ``sync.background=never``.
- :class:`BackgroundBuckets` (the default for those other compressors): the hook queues the
  bucket's mean on a :class:`~ddla.comm.background.BackgroundChannel` (a second process group
  driven by one communication thread) and returns a torch Future at once, so backward goes on
  computing the next buckets while this one is compressed, exchanged and decoded, as PyTorch's
  ``powerSGD_hook`` chains its all-reduces. The job is the same ``Aggregator.mean`` call on the
  same compressor object, so gradients are bitwise those of the synchronous hook. Jobs run in
  bucket order, the order DDP launches buckets on every agent, so collectives on the second
  group match across agents.

Why not PyTorch's own ``PowerSGDState`` + ``powerSGD_hook`` for ``powersgd:R``: its
collectives call ``dist.all_reduce`` on the group directly, past the Transport, so no link
emulation (the ``wan`` clocks would not see them), no per-op timeout mapped to an error naming
the peer, bytes only accounted after the fact; and its algorithm (one factorization shared by
all agents through two all-reduces, error feedback per bucket in its own state) is not
ddla's ``powersgd:R`` compressor (each agent's own warm-started P, Q all-gathered, error
feedback in the checkpointed compressor state) that every other strategy uses.

Time: on the channel the transfers record bytes but no seconds (the agent kept computing);
at the end of backward, before DDP's own wait for the buckets, a callback queued on the
autograd engine waits for every bucket of the step (:meth:`~ddla.comm.background.Pending.wait`):
the clock pays only the modelled link time that backward did not cover, the seconds blocked
are recorded (op ``background_wait``), and a job stuck past a few timeouts raises there.

DDP inspects a hook's signature and rejects string annotations (this module uses postponed
evaluation), so ``bucket`` and the return value stay unannotated: GradBucket -> Future[Tensor].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.autograd import Variable

if TYPE_CHECKING:
    from ddla.aggregate import Aggregator
    from ddla.comm.background import BackgroundChannel, Pending


def bucket_hook(aggregator: Aggregator, bucket):
    """DDP comm hook: mean of the bucket's gradients over agents, through the aggregator."""
    buffer = bucket.buffer()
    # Divide before summing (as DDP's default hook does) so fp32 sums stay in range.
    buffer.div_(aggregator.transport.world_size)
    return aggregator.bucket_sum(buffer, tag="train")


def _keys(bucket, count: int) -> list[str]:
    # DDP may rebuild buckets after the first step; keys carry the index and the stateful
    # compressors reset a key's state when its shape changes.
    return [f"b{bucket.index()}.{i}" for i in range(count)]


def _write_mean(aggregator: Aggregator, buffer: torch.Tensor, grads, keys) -> torch.Tensor:
    mean = aggregator.mean(grads, keys=keys, tag="train")
    return buffer.copy_(torch.cat([m.reshape(-1) for m in mean]).to(buffer.dtype))


def compressed_hook(aggregator: Aggregator, bucket):
    """DDP comm hook: mean of the bucket's gradients through the aggregator's compressor."""
    future = aggregator.bucket_mean_summable(bucket.buffer(), tag="train")
    if future is not None:  # fp16/bf16: asynchronous, overlaps the rest of backward
        return future
    grads = bucket.gradients()
    buffer = _write_mean(aggregator, bucket.buffer(), grads, _keys(bucket, len(grads)))
    done: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    done.set_result(buffer)
    return done


class BackgroundBuckets:
    """State of the background hook: the channel, its aggregator, the buckets of this step.

    Example (what :class:`~ddla.sync.allreduce.AllReduce` does on every agent)::

        channel = BackgroundChannel(transport)
        buckets = BackgroundBuckets(Aggregator(channel.transport, compressor=compressor), channel)
        ddp.register_comm_hook(buckets, BackgroundBuckets.hook)
    """

    def __init__(self, aggregator: Aggregator, channel: BackgroundChannel) -> None:
        self.aggregator = aggregator
        self.channel = channel
        self._inflight: list[Pending[torch.Tensor]] = []

    @staticmethod
    def hook(state: BackgroundBuckets, bucket):
        """DDP comm hook: queue the bucket's mean on the channel, return its future."""
        return state.submit(bucket)

    def submit(self, bucket) -> torch.futures.Future:
        buffer, grads = bucket.buffer(), bucket.gradients()
        keys = _keys(bucket, len(grads))
        aggregator = self.aggregator

        def job(_transport: object) -> torch.Tensor:
            return _write_mean(aggregator, buffer, grads, keys)

        if not self._inflight:
            # DDP queues its own final callback (which waits for every bucket's future) once
            # the last bucket is launched, so this one, queued at the first, runs before it.
            Variable._execution_engine.queue_callback(self.land)
        pending = self.channel.submit(job, what=f"gradient bucket {bucket.index()}", future=True)
        self._inflight.append(pending)
        assert pending.future is not None
        return pending.future

    def land(self) -> None:
        """Wait for every bucket of this backward pass (clock and seconds blocked); raises the
        first bucket's error, or CommTimeoutError for a job stuck past its bound."""
        inflight, self._inflight = self._inflight, []
        for pending in inflight:
            pending.wait()

    def close(self) -> None:
        self.channel.close()
