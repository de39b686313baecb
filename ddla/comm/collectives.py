"""The Transport's collectives: all-reduce (blocking and async), all-gather, all-to-all,
all-gather of objects, broadcast, barrier.

A mixin of :class:`~ddla.comm.transport.Transport`, kept apart because the collectives are the
bulk of its code: each op checks its arguments, computes its ring-model bytes
(:mod:`ddla.comm.ring`), and hands its body to the Transport's single seam ``_run`` (timeouts
mapped to DdlaErrors, bytes and seconds recorded, link time charged).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from ddla.comm.ring import ring_bytes

if TYPE_CHECKING:
    from ddla.comm.clock import Clock
    from ddla.comm.emulation import LinkEmulator
    from ddla.comm.stats import CommStats
    from ddla.profile.spans import Spans

REDUCE_OPS = ("sum", "avg", "max", "min")
#: Extra time Work.wait() allows over a collective's own timeout, so that the backend's
#: (more precise) timeout error wins and Work.wait only guards backends that ignore it.
_WAIT_GRACE_S = 1.0


@dataclass(slots=True)
class _Measured:
    """Returned by an op body whose byte counts are known only after it ran."""

    result: Any
    sent: int
    received: int
    #: The other end, when only the op itself learns it (an any-source receive).
    peer: int | None = None


class _Done:
    """A finished value read like a completed future's (``value()``)."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def value(self) -> Any:
        return self._value


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


class Collectives:
    """Collective ops over the Transport's process group (see :class:`Transport`)."""

    # Provided by Transport.
    rank: int
    world_size: int
    backend: str
    timeout_s: float
    stats: CommStats
    clock: Clock
    _pg: Any
    _closed: bool
    spans: Spans | None
    _links: LinkEmulator | None
    _link_tags: frozenset[str]
    _run: Callable[..., Any]
    _begin: Callable[[str], Any]
    _end: Callable[..., None]
    _failure: Callable[..., Any]
    _limit: Callable[[float | None], float]
    _wait: Callable[[Any, float], None]
    _group_name: Callable[[], str]
    _sync_clocks: Callable[[str, float], None]

    def all_reduce(
        self,
        tensor: torch.Tensor,
        *,
        op: str = "sum",
        tag: str = "train",
        timeout_s: float | None = None,
    ) -> torch.Tensor:
        """Reduce ``tensor`` in place across all agents (``sum``, ``avg``, ``max``, ``min``)."""
        if op not in REDUCE_OPS:
            raise ValueError(f"all_reduce: op must be one of {', '.join(REDUCE_OPS)}, got {op!r}")
        if op == "avg" and not tensor.is_floating_point():
            raise ValueError(f"all_reduce: op='avg' needs a floating tensor, got {tensor.dtype}")
        limit = self._limit(timeout_s)
        sent, received = ring_bytes("all_reduce", _nbytes(tensor), self.world_size, self.rank)

        def body() -> torch.Tensor:
            if self.world_size == 1:
                return tensor
            # gloo has no AVG: sum, then divide (NCCL averages natively).
            native = op != "avg" or self.backend == "nccl"
            reduce_op = getattr(dist.ReduceOp, op.upper()) if native else dist.ReduceOp.SUM
            work = self._pg.allreduce(tensor, op=reduce_op, timeout=timedelta(seconds=limit))
            self._wait(work, limit)
            if not native:
                tensor.div_(self.world_size)
            return tensor

        return self._run(
            "all_reduce", tag, sent, received, body, timeout_s=limit, nbytes=_nbytes(tensor)
        )

    def all_reduce_async(
        self,
        tensor: torch.Tensor,
        *,
        tag: str = "train",
        then: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.futures.Future:
        """Start a sum all-reduce of ``tensor`` in place; the future yields the tensor, or
        ``then(tensor)`` (e.g. a cast back from the wire dtype) run in the same callback.

        For DDP communication hooks. The call, its bytes and its seconds in flight are recorded
        (under ``all_reduce``, through the Transport's seam like every op) when the future
        completes, before any waiter wakes; a failed one is not recorded. The backend's timeout
        is the Transport's ``timeout_s``. A failure is mapped like :meth:`all_reduce`'s, but torch
        futures re-raise callback errors as ``RuntimeError("Got the following error when
        running the callback: PeerFailedError: ...")``: the DdlaError's name and message
        survive in the text, its type does not (measured, torch 2.13).

        Example (a DDP communication hook; DDP divides by nothing, so divide here)::

            def hook(transport, bucket):
                tensor = bucket.buffer().div_(transport.world_size)
                return transport.all_reduce_async(tensor)

            ddp_model.register_comm_hook(transport, hook)
        """
        start = self._begin("all_reduce")
        nbytes = _nbytes(tensor)
        sent, received = ring_bytes("all_reduce", nbytes, self.world_size, self.rank)
        if self.world_size == 1:
            self._end("all_reduce", tag, sent, received, start, nbytes=nbytes)
            done: torch.futures.Future = torch.futures.Future()
            done.set_result(tensor if then is None else then(tensor))
            return done
        limit = self.timeout_s
        links = self._links if tag in self._link_tags else None
        try:
            self._sync_clocks(tag, limit)
        except RuntimeError as exc:
            raise self._failure(exc, "all_reduce", tag, limit) from exc
        work = self._pg.allreduce(tensor, op=dist.ReduceOp.SUM, timeout=timedelta(seconds=limit))

        def record(fut: torch.futures.Future) -> torch.Tensor:
            # Through the seam's second half; runs before any waiter wakes, so the stats are
            # complete when the caller resumes. Link time was paid by the wrapped future.
            value = fut.value()
            self._end(
                "all_reduce", tag, sent, received, start, nbytes=nbytes, charge=False,
                modelled_s=0.0 if links is None else links.cost("all_reduce", nbytes),
            )  # fmt: skip
            return value if then is None else then(value)

        def finish(fut: torch.futures.Future) -> torch.Tensor:
            try:
                value = fut.value()
            except RuntimeError as exc:
                if start.span is not None:  # a failed call closes its profiler span too
                    self.spans.end(start.span, tag=tag, error=type(exc).__name__)
                raise self._failure(exc, "all_reduce", tag, limit) from exc
            return value[0] if isinstance(value, list) else value

        if links is None:
            # One callback, not two: each hop of a chained future is a GIL hand-off on gloo's
            # thread per bucket (benchmarks/ddp_hook_cost.py).
            return work.get_future().then(lambda fut: record(_Done(finish(fut))))
        # Completes once the modelled transfer is done (a timer on the real clock).
        future = links.wrap_future(work.get_future().then(finish), "all_reduce", nbytes)
        return future.then(record)

    def all_gather(
        self, tensor: torch.Tensor, *, tag: str = "train", timeout_s: float | None = None
    ) -> list[torch.Tensor]:
        """Every agent's ``tensor`` (same shape and dtype everywhere), in rank order."""
        limit = self._limit(timeout_s)
        sent, received = ring_bytes("all_gather", _nbytes(tensor), self.world_size, self.rank)

        def body() -> list[torch.Tensor]:
            if self.world_size == 1:
                return [tensor.clone()]
            out = [torch.empty_like(tensor) for _ in range(self.world_size)]
            work = self._pg.allgather(out, tensor, timeout=timedelta(seconds=limit))
            self._wait(work, limit)
            return out

        return self._run(
            "all_gather", tag, sent, received, body, timeout_s=limit, nbytes=_nbytes(tensor)
        )

    def all_to_all(
        self, tensor: torch.Tensor, *, tag: str = "train", timeout_s: float | None = None
    ) -> torch.Tensor:
        """Cut ``tensor`` (1-D, length divisible by the world size) into N equal chunks and
        send chunk ``j`` to rank ``j``; return the chunks received, in rank order.

        Chunk ``i`` of the result is what rank ``i`` sent to this agent (this agent's own
        chunk stays in place). The building block of a reduce-scatter whose chunks cannot be
        summed on the wire (quantized codes, see :mod:`ddla.compress.reduce`).
        """
        if tensor.dim() != 1 or tensor.numel() % self.world_size:
            raise ValueError(
                f"all_to_all: need a 1-D tensor whose length divides into {self.world_size} "
                f"equal chunks, got shape {tuple(tensor.shape)}"
            )
        limit = self._limit(timeout_s)
        sent, received = ring_bytes("all_to_all", _nbytes(tensor), self.world_size, self.rank)

        def body() -> torch.Tensor:
            if self.world_size == 1:
                return tensor.clone()
            out = torch.empty_like(tensor)
            opts = dist.AllToAllOptions()
            opts.timeout = timedelta(seconds=limit)
            self._wait(self._pg.alltoall_base(out, tensor, [], [], opts), limit)
            return out

        return self._run(
            "all_to_all", tag, sent, received, body, timeout_s=limit, nbytes=_nbytes(tensor)
        )

    def all_gather_object(
        self, obj: Any, *, tag: str = "eval", timeout_s: float | None = None
    ) -> list[Any]:
        """Every agent's picklable ``obj``, in rank order. For small metadata between agents
        of one run (it unpickles what peers send, like ``torch.distributed.all_gather_object``).

        Bytes count the pickled payloads only (the 8-byte size exchange and the padding to
        the largest payload are not counted): this agent sends its payload to each of the
        ``N-1`` others and receives each of theirs.
        """
        limit = self._limit(timeout_s)
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

        def body() -> _Measured:
            if self.world_size == 1:
                return _Measured([pickle.loads(payload)], 0, 0)
            deadline = time.monotonic() + limit
            size = torch.tensor([len(payload)], dtype=torch.int64)
            sizes = [torch.empty_like(size) for _ in range(self.world_size)]
            self._wait(self._pg.allgather(sizes, size, timeout=timedelta(seconds=limit)), limit)
            lengths = [int(s.item()) for s in sizes]
            padded = torch.zeros(max(lengths), dtype=torch.uint8)
            padded[: len(payload)] = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
            out = [torch.empty_like(padded) for _ in lengths]
            left = max(deadline - time.monotonic(), 0.001)
            self._wait(self._pg.allgather(out, padded, timeout=timedelta(seconds=left)), left)
            objs = [
                pickle.loads(t[:n].numpy().tobytes()) for t, n in zip(out, lengths, strict=True)
            ]
            received = sum(n for r, n in enumerate(lengths) if r != self.rank)
            return _Measured(objs, (self.world_size - 1) * len(payload), received)

        return self._run("all_gather_object", tag, 0, 0, body, timeout_s=limit, nbytes=len(payload))

    def broadcast(
        self, tensor: torch.Tensor, *, src: int, tag: str = "train", timeout_s: float | None = None
    ) -> torch.Tensor:
        """Overwrite ``tensor`` in place with rank ``src``'s on every agent."""
        if not 0 <= src < self.world_size:
            raise ValueError(f"broadcast: src={src} is not a rank in 0..{self.world_size - 1}")
        limit = self._limit(timeout_s)
        sent, received = ring_bytes(
            "broadcast", _nbytes(tensor), self.world_size, self.rank, src=src
        )

        def body() -> torch.Tensor:
            if self.world_size > 1:
                work = self._pg.broadcast(tensor, src, timeout=timedelta(seconds=limit))
                self._wait(work, limit)
            return tensor

        return self._run(
            "broadcast",
            tag,
            sent,
            received,
            body,
            timeout_s=limit,
            nbytes=_nbytes(tensor),
            root=src,
        )

    def barrier(self, *, timeout_s: float | None = None) -> None:
        """Wait until every agent reaches the barrier (recorded under tag ``control``)."""
        limit = self._limit(timeout_s)

        def body() -> None:
            if self.world_size > 1:
                self._wait(self._pg.barrier(timeout=timedelta(seconds=limit)), limit)

        self._run("barrier", "control", 0, 0, body, timeout_s=limit)
