"""A Transport proxy that securely aggregates averaged updates and audits synchronizations.

Strategies average through ``Transport.all_reduce`` (model averages, pseudo-gradients) or
``all_reduce_async`` (DDP gradient buckets). Wrapping the agent's Transport in
:class:`SecureTransport` sends every floating-point ``sum``/``avg`` reduction through
:class:`~ddla.security.secagg.SecureAggregator` without the strategies knowing; every other
call goes to the wrapped Transport unchanged, so byte accounting sees the real (int64, 2x)
traffic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ddla.comm import Transport
    from ddla.security.audit import AuditLog
    from ddla.security.secagg import SecureAggregator


class SecureTransport:
    """Delegates to ``inner``; reroutes floating sum/avg all-reduces through ``aggregator``.

    Every ``train``-tagged reduction is recorded as a ``sync`` audit event (flushed, not
    fsynced: there is one per step and bucket; the next durable event fsyncs them).
    """

    def __init__(
        self,
        inner: Transport,
        *,
        aggregator: SecureAggregator | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._inner = inner
        self.aggregator = aggregator
        self.audit = audit

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def intercepts_payloads(self) -> bool:
        """True when masking or auditing: DDP must route gradients through this proxy."""
        return (
            self.aggregator is not None
            or self.audit is not None
            or (self._inner.intercepts_payloads)
        )

    def _secure(self, tensor: torch.Tensor, op: str) -> bool:
        return (
            self.aggregator is not None
            and self._inner.world_size > 1
            and op in ("sum", "avg")
            and tensor.is_floating_point()
        )

    def all_reduce(
        self,
        tensor: torch.Tensor,
        *,
        op: str = "sum",
        tag: str = "train",
        timeout_s: float | None = None,
    ) -> torch.Tensor:
        secure = self._secure(tensor, op)
        if secure:
            self.aggregator.all_reduce(self._inner, tensor, op=op, tag=tag, timeout_s=timeout_s)
        else:
            self._inner.all_reduce(tensor, op=op, tag=tag, timeout_s=timeout_s)
        if self.audit is not None and tag == "train":
            self.audit.append("sync", op=op, elements=tensor.numel(), secure=secure, durable=False)
        return tensor

    def all_reduce_async(self, tensor: torch.Tensor, *, tag: str = "train") -> torch.futures.Future:
        if not self._secure(tensor, "sum"):
            if self.audit is not None and tag == "train":
                self.audit.append(
                    "sync", op="sum", elements=tensor.numel(), secure=False, durable=False
                )
            return self._inner.all_reduce_async(tensor, tag=tag)
        # Masking needs the whole bucket before it can send, so this runs synchronously and
        # hands DDP an already-completed future (DDP accepts any Future from a comm hook).
        self.all_reduce(tensor, op="sum", tag=tag)
        done: torch.futures.Future = torch.futures.Future()
        done.set_result(tensor)
        return done
