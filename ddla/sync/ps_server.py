"""One parameter server: a shard of the parameters, its optimizer, and the workers' clocks.

It runs on a thread of its agent (co-located with a worker, or on a dedicated agent) and talks
to workers through the Transport's point-to-point seam only: any-source receive of request
headers, then the body from that worker (:mod:`ddla.sync.ps_wire`), on a side channel
(:meth:`ddla.comm.Transport.side_channel`: the server's traffic has its own byte counts and does
not move its agent's training clock). A worker on the same agent calls it directly and takes
its reply from a queue (a co-located shard moves no bytes).

What it does with each request (:class:`~ddla.sync.ssp.SspGate` decides who waits):

- ``PUSH`` (an update computed on the parameters the worker last pulled): with ``S = 0`` it is
  kept until every training worker has pushed its update of that clock, then the server takes
  one optimizer step on their mean (synchronous SGD); with ``S > 0`` it takes one step at once
  on ``update / workers`` (times ``1/(1+staleness)`` with ``sync.staleness_scale``). Then every
  waiting worker whose clock is within S of the slowest gets the shard back.
- ``DONE``: that agent pushes no more (it no longer holds others back); once every other agent
  has said so, each gets the final shard and the thread ends.
- ``PULL``: the shard now (a dedicated server refreshing the model it evaluates).

Time: each request carries the sender's clock reading; it arrives that plus its modelled link
time, and a reply leaves at the later of the request's arrival and the arrival of the request
that released it, so on virtual clocks a worker that waited sees that time as waiting.

Failures: a worker that sends nothing for twice ``timeout_s`` while it owes an update is named
in a ``PeerFailedError``; the server sends ``ABORT`` naming it to every waiting worker and stops.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import torch

from ddla.compress import build_compressor
from ddla.compress.base import unpack
from ddla.errors import CommTimeoutError, DdlaError, PeerFailedError
from ddla.sync import ps_wire as wire
from ddla.sync.ssp import SspGate, build_server_optimizer, staleness_scale

if TYPE_CHECKING:
    from ddla.comm import Transport
    from ddla.sync.config import SyncConfig


class ShardServer:
    """Serves ``params`` (this server's shard) to ``workers``; see the module docstring."""

    def __init__(
        self,
        *,
        transport: Transport,
        index: int,
        params: list[torch.Tensor],
        workers: list[int],
        local_worker: bool,
        config: SyncConfig,
    ) -> None:
        self.side = transport.side_channel()
        self.rank, self.index = transport.rank, index
        self.params = [torch.nn.Parameter(p.detach().clone().float()) for p in params]
        self.optimizer = build_server_optimizer(
            self.params, config.server_optim, lr=config.server_lr
        )
        self.workers = list(workers)
        self.bound = config.staleness_bound
        self.scale = config.staleness_scale
        self.timeout_s = transport.timeout_s
        #: How long no request may come before the workers that owe one are named: twice the
        #: Transport's timeout, so an evaluation (a collective every agent attends, pushing
        #: nothing meanwhile) that stays within the timeout never looks like a dead worker.
        self.silence_s = 2 * transport.timeout_s
        self.gate = SspGate(workers=self.workers, staleness=self.bound)
        #: Agents that say DONE: every other agent, and this one's worker when co-located.
        self.clients = [r for r in range(transport.world_size) if r != self.rank]
        self.local_worker = local_worker
        self.expect_done = set(self.clients) | ({self.rank} if local_worker else set())
        # The layout of a pushed body: this shard compressed by the run's compressor.
        spec = config.compress
        self._templates = [
            build_compressor(spec).compress(torch.zeros_like(p), key=f"t{i}")
            for i, p in enumerate(self.params)
        ]
        self._decoder = build_compressor(spec)
        self.version = 0
        #: The latest arrival time of a request (its sender's clock): when the shard's current
        #: values existed, on the workers' clocks.
        self.time = float("-inf")
        self.lock = threading.RLock()  # held around a request; snapshots take it too
        self.local_out: queue.Queue[tuple[int, float, list[torch.Tensor], int]] = queue.Queue()
        self.error: BaseException | None = None
        #: Applied updates: (worker, its clock, staleness in clocks, server steps since its pull).
        self.log: list[tuple[int, int, int, int]] = []
        self._tick: dict[int, list[torch.Tensor]] = {}
        self._waiting: dict[int, float] = {}
        self._final: dict[int, float] = {}
        self._pulled: dict[int, tuple[int, int]] = {}  # worker -> (staleness, version) at pull
        self._done: set[int] = set()
        self._heard = {w: time.monotonic() for w in self.workers}
        self._outbox: list[Any] = []
        self._culprit = -1
        self._thread: threading.Thread | None = None

    # ---- lifetime ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start serving (once; after a checkpoint's state is loaded)."""
        if self._thread is None:
            if not self.clients:
                return  # one agent: its worker is served on its own thread
            self._heard = {w: time.monotonic() for w in self.workers}
            self._thread = threading.Thread(target=self._run, name=f"ps{self.index}", daemon=True)
            self._thread.start()

    def join(self) -> None:
        """Wait for the thread to end (every agent said DONE, or it failed); re-raise."""
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the worker threads see it and raise it
            self.error = exc
            self._abort(exc)

    # ---- the loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        """Take requests from the other agents until each has said DONE.

        It blocks in the any-source receive of the next header (gloo marks a receive complete
        only in ``wait``, so there is no polling it): a wait that expires means no other agent
        sent anything for :attr:`silence_s`, and the workers that owed an update are named.
        """
        remote = set(self.clients)
        while remote - self._done:
            buf = wire.empty_header()
            handle = self.side.irecv(buf, tag="control", channel=wire.REQUEST)
            try:
                handle.wait(timeout_s=self.silence_s)
            except CommTimeoutError:
                with self.lock:
                    self._silent()
                raise
            source = int(handle.source)  # type: ignore[arg-type]
            msg = wire.parse(buf)
            body = None
            if msg.nbytes:
                body = torch.empty(msg.nbytes, dtype=torch.uint8)
                self.side.recv(body, src=source, tag="train", channel=wire.REQUEST_BODY)
            arrival = msg.time + self.side.link_seconds("recv", msg.nbytes, src=source)
            for handle in self._serve(source, msg, body, arrival):
                handle.wait(timeout_s=self.timeout_s)  # outside the lock

    def handle_local(self, kind: int, body: Any, sent_at: float) -> list[Any]:
        """A request of the worker on this agent (its reply comes on :attr:`local_out`).

        Returns the replies it sent to other workers, for the caller to ``wait`` once it has
        its own replies: waiting now could deadlock with a co-located server on another agent
        whose worker is waiting here in the same way."""
        if self.error is not None:
            raise self.error
        return self._serve(self.rank, wire.Message(kind, 0, 0, sent_at, 0, 0), body, sent_at)

    def _serve(self, source: int, msg: wire.Message, body: Any, arrival: float) -> list[Any]:
        with self.lock:
            self._handle(source, msg, body, arrival)
            sends, self._outbox = self._outbox, []
        return sends

    def _silent(self) -> None:
        """Raise naming the workers that owe an update and sent nothing for ``silence_s``."""
        now = time.monotonic()
        owing = [
            w for w in self.workers
            if w not in self._done and w not in self._waiting and w not in self._final
            and now - self._heard[w] > self.silence_s
        ]  # fmt: skip
        if owing:
            self._culprit = owing[0]
            ranks = ", ".join(map(str, owing))
            raise PeerFailedError(
                f"parameter server {self.index} (rank {self.rank}): worker rank {ranks} sent "
                f"no update for {self.silence_s:g} s (clock "
                f"{self.gate.clocks[owing[0]]}); it died or is stuck",
                help="see that agent's log; a lost worker ends a param_server run",
            )

    # ---- requests ---------------------------------------------------------------------------

    def _handle(self, source: int, msg: wire.Message, body: Any, arrival: float) -> None:
        self.time = max(self.time, arrival)
        if source in self._heard:
            self._heard[source] = time.monotonic()
        if msg.kind == wire.PUSH:
            self._push(source, self._decode(body), arrival)
        elif msg.kind == wire.DONE:
            self._done.add(source)
            self._final[source] = arrival
            if source in self.gate.clocks:
                self.gate.finish(source)
                self._maybe_tick()
            self._release(arrival)
            if self._done == self.expect_done:
                at = max(self._final.values())
                for dst in sorted(self._final):
                    self._reply(dst, at)
                self._final.clear()
        elif msg.kind == wire.PULL:
            self._reply(source, arrival)
        else:
            raise DdlaError(f"parameter server {self.index}: unknown request {msg.kind}")

    def _decode(self, body: Any) -> list[torch.Tensor]:
        if isinstance(body, list):  # the co-located worker's update, uncompressed
            return [u.reshape(t.shape) for u, t in zip(body, self.params, strict=True)]
        pairs = zip(unpack(body, self._templates), self.params, strict=True)
        return [self._decoder.decompress(p).reshape(t.shape) for p, t in pairs]

    def _push(self, worker: int, update: list[torch.Tensor], arrival: float) -> None:
        stale, pulled_version = self._pulled.get(worker, (0, 0))
        clock = self.gate.push(worker)
        self.log.append((worker, clock + 1, stale, self.version - pulled_version))
        if self.bound == 0:
            self._tick[worker] = update
            self._maybe_tick()
        else:
            factor = staleness_scale(stale, enabled=self.scale) / len(self.workers)
            self._step([u * factor for u in update])
        self._waiting[worker] = arrival
        self._release(arrival)

    def _maybe_tick(self) -> None:
        """S = 0: one step on the mean once every training worker has pushed this clock."""
        active = [w for w in self.workers if w not in self.gate.done]
        if not self._tick or any(w not in self._tick for w in active):
            return
        updates = list(self._tick.values())
        mean = [torch.stack(parts).mean(0) for parts in zip(*updates, strict=True)]
        self._tick.clear()
        self._step(mean)

    def _step(self, update: list[torch.Tensor]) -> None:
        with self.lock:
            for p, u in zip(self.params, update, strict=True):
                p.grad = u.to(p.dtype)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.version += 1

    def _release(self, now: float) -> None:
        for w in sorted(self._waiting):
            if self.gate.may_go(w):
                self._reply(w, max(self._waiting.pop(w), now))

    def _reply(self, dst: int, at: float) -> None:
        stale = self.gate.staleness(dst) if dst in self.gate.clocks else 0
        self._pulled[dst] = (stale, self.version)
        with self.lock:
            values = [p.detach().clone() for p in self.params]
        if dst == self.rank:
            self.local_out.put((wire.PARAMS, at, values, stale))
            return
        body = wire.flat_bytes(values)
        h = wire.header(wire.PARAMS, clock=self.version, nbytes=body.numel(), time=at, a=stale)
        self._outbox.append(self.side.isend(h, dst, tag="control", channel=wire.REPLY))
        self._outbox.append(self.side.isend(body, dst, tag="train", channel=wire.REPLY_BODY))

    def _abort(self, exc: BaseException) -> None:
        """Tell every waiting agent that the run cannot go on, and why."""
        culprit = self._culprit
        waiting = set(self._waiting) | set(self._final) | (set(self.workers) - self._done)
        for dst in sorted(waiting):
            if dst == self.rank:
                self.local_out.put((wire.ABORT, 0.0, [], culprit))
                continue
            try:
                h = wire.header(wire.ABORT, a=culprit)
                self.side.isend(h, dst, tag="control", channel=wire.REPLY).wait(timeout_s=2.0)
            except DdlaError:
                pass  # that agent is gone too

    # ---- state ------------------------------------------------------------------------------

    def snapshot(self) -> list[torch.Tensor]:
        """The shard now (a copy)."""
        with self.lock:
            return [p.detach().clone() for p in self.params]

    def report(self) -> dict[str, Any]:
        """What the run summary says about this server."""
        stale = [s for _, _, s, _ in self.log]
        lag = [g for _, _, _, g in self.log]
        return {
            "server": self.index,
            "rank": self.rank,
            "version": self.version,
            "updates": len(self.log),
            "max_staleness": max(stale, default=0),
            "mean_staleness": sum(stale) / len(stale) if stale else 0.0,
            "max_version_lag": max(lag, default=0),
            "clocks": {str(w): c for w, c in sorted(self.gate.clocks.items())},
            "bytes_sent": int(self.side.stats.totals("train")["bytes_sent"]),
            "bytes_received": int(self.side.stats.totals("train")["bytes_received"]),
        }

    def state_dict(self) -> dict[str, Any]:
        with self.lock:
            return {
                "params": [p.detach().clone() for p in self.params],
                "optimizer": self.optimizer.state_dict(),
                "version": self.version,
                "clocks": dict(self.gate.clocks),
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self.lock, torch.no_grad():
            for p, s in zip(self.params, state["params"], strict=True):
                p.copy_(s)
            self.optimizer.load_state_dict(state["optimizer"])
            self.version = int(state["version"])
            self.gate.clocks = {int(k): int(v) for k, v in state["clocks"].items()}
