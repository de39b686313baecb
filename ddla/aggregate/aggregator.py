"""The Aggregator: the one place where several agents' tensors become one.

A strategy builds one Aggregator (with its compressor) and calls :meth:`Aggregator.mean`; the
DDP hook path, buffer averaging, the periodic strategies and the evaluator's model merge all go
through here. The Aggregator owns the choice of wire scheme (:mod:`ddla.aggregate.wire`: plain
or low-precision all-reduce, quantized reduce-scatter + all-gather, all-gather of sparse or
low-rank payloads) and, when the run asks for it, security as an explicit layer
(:class:`Protection`): pairwise masking of every mean (:mod:`ddla.aggregate.secure`) and an
audit record of every training synchronization. A combination it cannot mask is refused when
the config is built (:func:`~ddla.aggregate.maskable.refuse_unmaskable`), and refused again
here, so no path can send an unmasked update under ``secure_aggregation``.

Example (one agent: nothing travels):

    >>> import torch
    >>> from ddla.comm import Transport
    >>> from ddla.compress import build_compressor
    >>> with Transport.single() as t:
    ...     agg = Aggregator(t, compressor=build_compressor("int8"))
    ...     agg.mean([torch.ones(3)])[0].tolist()
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ddla.aggregate.maskable import refuse_unmaskable
from ddla.aggregate.secure import grid, masked_quantized_mean
from ddla.aggregate.wire import compressed_mean
from ddla.compress import Compressor, Identity

if TYPE_CHECKING:
    from ddla.comm import Transport
    from ddla.security.audit import AuditLog
    from ddla.security.secagg import SecureAggregator


@dataclass(kw_only=True, frozen=True)
class Protection:
    """The security layer of aggregation: pairwise ``masking`` of every mean, and an ``audit``
    record of every training synchronization. Either may be None (off)."""

    masking: SecureAggregator | None = None
    audit: AuditLog | None = None


class Aggregator:
    """Means over every agent of the Transport's group, compressed and protected as configured.

    ``scatter`` picks int8/int4's reduce-scatter scheme (``sync.quantized_reduce``). With one
    agent nothing is sent and inputs come back as copies.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        compressor: Compressor | None = None,
        scatter: bool = True,
        protection: Protection | None = None,
    ) -> None:
        self.transport = transport
        self.compressor = compressor if compressor is not None else Identity()
        self.scatter = scatter
        self.protection = protection or Protection()
        if self.masking is not None:
            refuse_unmaskable(self.compressor.spec)

    @property
    def masking(self) -> SecureAggregator | None:
        return self.protection.masking

    @property
    def sees_payloads(self) -> bool:
        """True when every payload must pass through Python (masking, audit, link emulation),
        so DDP cannot use its built-in C++ all-reduce."""
        p = self.protection
        return p.masking is not None or p.audit is not None or self.transport.intercepts_payloads

    @property
    def secure(self) -> bool:
        """Whether means are masked (there are peers and masking is on)."""
        return self.masking is not None and self.transport.world_size > 1

    def mean(
        self,
        tensors: Sequence[torch.Tensor],
        *,
        keys: Sequence[str] | None = None,
        tag: str = "train",
        weight: float | None = None,
    ) -> list[torch.Tensor]:
        """Mean over agents of each tensor (collective; every agent calls it alike).

        ``keys`` name the tensors for stateful compressors (stable across calls). With
        ``weight`` each agent's tensors count in proportion to it (e.g. its sample count):
        ``sum_i w_i x_i / sum_i w_i``. Inputs are left untouched.
        """
        tensors = list(tensors)
        if weight is not None:
            tensors = self._weighted(tensors, weight, tag)
        if not self.secure:
            out = compressed_mean(
                self.transport, tensors, self.compressor, tag=tag, keys=keys, scatter=self.scatter
            )
        else:
            out = self._masked_mean(tensors, tag)
        self._audit(tensors, tag)
        return out

    def _weighted(self, tensors: list[torch.Tensor], weight: float, tag: str) -> list[torch.Tensor]:
        # The mean of x_i * (W w_i / sum w) is the weighted mean; one scalar all-reduce first.
        if not weight >= 0:
            raise ValueError(f"aggregation weight must be >= 0, got {weight}")
        total = torch.tensor([float(weight)], dtype=torch.float64)
        self.transport.all_reduce(total, op="sum", tag=tag)
        if total.item() <= 0:
            raise ValueError("aggregation weights sum to 0 over the agents")
        factor = self.transport.world_size * weight / total.item()
        return [t.detach() * factor for t in tensors]

    def _masked_mean(self, tensors: list[torch.Tensor], tag: str) -> list[torch.Tensor]:
        masking = self.masking
        assert masking is not None
        if not tensors:
            return []
        shape = grid(self.compressor)
        if shape is not None:
            levels, block = shape
            return masked_quantized_mean(
                self.transport, tensors, masking, levels=levels, block=block, tag=tag
            )
        flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
        masking.all_reduce(self.transport, flat, op="avg", tag=tag)
        out, offset = [], 0
        for t in tensors:
            out.append(flat[offset : offset + t.numel()].view(t.shape).to(t.dtype))
            offset += t.numel()
        return out

    def _audit(self, tensors: Sequence[torch.Tensor], tag: str) -> None:
        audit = self.protection.audit
        if audit is not None and tag == "train":
            audit.append(
                "sync",
                op="mean",
                elements=sum(t.numel() for t in tensors),
                compress=self.compressor.spec,
                secure=self.secure,
                durable=False,  # one per step and bucket; the next durable event syncs them
            )

    def mean_(self, tensor: torch.Tensor, *, tag: str = "train") -> torch.Tensor:
        """In-place mean of one tensor, uncompressed (buffers, model merges), masked if on."""
        if self.transport.world_size == 1:
            return tensor
        if self.secure:
            assert self.masking is not None
            self.masking.all_reduce(self.transport, tensor, op="avg", tag=tag)
        else:
            self.transport.all_reduce(tensor, op="avg", tag=tag)
        self._audit([tensor], tag)
        return tensor

    def bucket_sum(self, buffer: torch.Tensor, *, tag: str = "train") -> torch.futures.Future:
        """Sum of a DDP gradient bucket (already divided by the world size) as a Future.

        Unmasked, it stays asynchronous (overlaps backward); masking needs the whole bucket
        before it can send, so it runs synchronously and hands DDP a completed future.
        """
        self._audit([buffer], tag)
        if not self.secure:
            return self.transport.all_reduce_async(buffer, tag=tag)
        assert self.masking is not None
        self.masking.all_reduce(self.transport, buffer, op="sum", tag=tag)
        done: torch.futures.Future = torch.futures.Future()
        done.set_result(buffer)
        return done

    def bucket_mean_summable(
        self, buffer: torch.Tensor, *, tag: str = "train"
    ) -> torch.futures.Future | None:
        """Mean of a DDP gradient bucket on a low-precision wire (fp16/bf16) as a Future.

        What PyTorch's ``fp16_compress_wrapper`` does, through the Transport: the bucket is
        divided by the world size and cast to the wire dtype, summed by an asynchronous
        all-reduce (overlapping the rest of backward), and cast back into ``buffer`` when the
        future completes. Elementwise the same as :meth:`mean` with that compressor. None when
        the compressor is not a plain summable cast or means are masked (then use :meth:`mean`).
        """
        wire_dtype = getattr(self.compressor, "wire_dtype", None)
        if not self.compressor.summable or wire_dtype is None or self.secure:
            return None
        self._audit([buffer], tag)
        wire = (buffer.detach().float() / self.transport.world_size).to(wire_dtype)

        def decode(summed: torch.Tensor) -> torch.Tensor:
            return buffer.copy_(summed.to(buffer.dtype))

        return self.transport.all_reduce_async(wire, tag=tag, then=decode)

    def average_state(
        self, model: torch.nn.Module, *, tag: str = "eval"
    ) -> dict[str, torch.Tensor]:
        """The mean of every agent's floating-point state as a new state dict (collective).

        All entries travel in one flat buffer: one all-reduce instead of one per tensor.
        Integer buffers are this agent's own.
        """
        state = model.state_dict()
        keys = [k for k, v in state.items() if v.is_floating_point()]
        merged = {k: v.detach().clone() for k, v in state.items()}
        if self.transport.world_size == 1 or not keys:
            return merged
        flat = torch.cat([state[k].detach().reshape(-1).float() for k in keys])
        self.mean_(flat, tag=tag)
        offset = 0
        for k in keys:
            n = state[k].numel()
            merged[k] = flat[offset : offset + n].view_as(state[k]).to(state[k].dtype)
            offset += n
        return merged
