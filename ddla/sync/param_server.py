"""``param_server``: servers hold the parameters in shards; workers pull, compute, push.

A parameter server (Li et al. 2014, "Scaling Distributed Machine Learning with the Parameter
Server", OSDI) with the stale synchronous parallel bound of Ho et al. 2013 (NeurIPS): see
:mod:`ddla.sync.ssp` for the clocks and :mod:`ddla.sync.ps_server` for a server. Each worker
trains with its own (inner) optimizer; every ``sync.every`` H steps it pushes to each server its
part of ``anchor - local`` (with H = 1 and SGD that is ``lr * grad``; with H > 1 the
pseudo-gradient of H local steps), compressed by ``sync.compress`` (error feedback per tensor),
and waits for that server's reply: the shard's current values, which become both its anchor and
its parameters. A server replies once the worker is within ``sync.staleness`` S clocks of the
slowest one, so a fast worker waits instead of running ahead; ``S = 0`` is synchronous SGD
exactly, ``S = inf`` never waits.

Roles: ``sync.servers`` servers hold shards of whole tensors (balanced by size); they are
co-located with the workers of ranks 0..servers-1 (a co-located shard moves no bytes), or
dedicated agents that do not train (``sync.server_ranks``). Every byte goes through the
Transport's point-to-point seam (any-source receive at the server), so byte accounting, link
emulation (a server's link is its rank's, e.g. ``comm.link_overrides=0=dc``) and timeouts see
it. ``finish`` pushes what is left, then every agent gets the final parameters, identical.

A server that dies takes the only copy of its shard: the workers waiting for it fail with a
``PeerFailedError`` naming it, and the run can restart from its last checkpoint (which holds
the servers' shards, optimizer state, versions and worker clocks: ``train.checkpoint_every``
with ``fault.max_restarts``). A worker that dies is named by its server after twice
``comm.timeout_s`` without an update, and the run ends (the elastic membership of
``ddla.comm.elastic`` covers the periodic strategies' collectives, not a server's clocks yet).

Example (one agent: its own server, the same code path as N):

    >>> import torch
    >>> from ddla.comm import Transport
    >>> from ddla.sync import SyncConfig, build_strategy
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> with Transport.single() as t:
    ...     s = build_strategy(SyncConfig(strategy="param_server"), transport=t, model=model,
    ...                        optimizer=opt)
    ...     for _ in range(3):
    ...         model(torch.randn(8, 4)).sum().backward(); opt.step(); opt.zero_grad()
    ...     s.finish(); s.close()
    >>> s.summary()["param_server"]["servers"][0]["version"]
    3
"""

from __future__ import annotations

import queue
import time
from typing import Any, ClassVar

import torch

from ddla.compress.base import pack
from ddla.compute.base import Compute
from ddla.errors import CommError, CommTimeoutError, ConfigError, PeerFailedError
from ddla.sync import ps_wire as wire
from ddla.sync.base import Strategy
from ddla.sync.ps_server import ShardServer
from ddla.sync.ssp import assign_blocks

_SERVER_GONE = (
    "a server holds the only copy of its shard, so the run cannot go on without it; restart "
    "from a checkpoint (train.checkpoint_every with fault.max_restarts)"
)


class ParamServer(Strategy):
    """Workers push updates to sharded servers under a staleness bound; see the module."""

    name: ClassVar[str] = "param_server"
    default_optimizer: ClassVar[str] = "sgd"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        t, c = self.transport, self.config
        p = self.aggregator.protection
        if p.masking is not None or p.audit is not None:
            raise ConfigError(
                "sync.strategy=param_server does not seal its pushes and pulls yet",
                help="turn security.enabled off, or use allreduce/diloco for a secured run",
            )
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.every: int = c.every
        self.server_ranks, self.workers = c.server_roles(t.world_size)
        if max(self.server_ranks) >= t.world_size or not self.workers:
            raise ConfigError(
                f"sync.servers/server_ranks: servers {self.server_ranks} and workers "
                f"{self.workers} do not fit {t.world_size} agents",
                help="name ranks below the agent count and leave at least one worker",
            )
        self.is_worker = t.rank in self.workers
        _broadcast_initial(t, self.params)
        self.shards = assign_blocks([p.numel() for p in self.params], len(self.server_ranks))
        self.anchor = [p.detach().clone().float() for p in self.params]
        self.server: ShardServer | None = None
        if t.rank in self.server_ranks:
            index = self.server_ranks.index(t.rank)
            self.server = ShardServer(
                transport=t, index=index, params=[self.params[i] for i in self.shards[index]],
                workers=self.workers, local_worker=self.is_worker, config=c,
            )  # fmt: skip
        #: Updates this worker has pushed (its clock), the step of its last push, and the
        #: staleness each reply reported (clocks ahead of the slowest worker).
        self.clock = 0
        self.last_sync = 0
        self.staleness_seen: list[int] = []
        self.wait_s = 0.0
        self.reports: list[dict[str, Any]] = []

    # ---- the worker -------------------------------------------------------------------------

    def after_step(self) -> None:
        self.serve()
        if self.is_worker and self.local_step % self.every == 0:
            self._sync()

    def serve(self) -> None:
        """Start this agent's server (at the first step, after a checkpoint is loaded) and
        raise what it failed with."""
        if self.server is not None:
            self.server.start()
            if self.server.error is not None:
                raise self.server.error

    @torch.no_grad()
    def _sync(self) -> None:
        self.clock += 1
        deltas = [a - p.detach().float() for a, p in zip(self.anchor, self.params, strict=True)]
        now = self.transport.clock.now()
        sends, deferred = [], []
        for s, rank in enumerate(self.server_ranks):
            if rank == self.transport.rank:  # nothing travels, so nothing is compressed
                assert self.server is not None
                update = [deltas[i] for i in self.shards[s]]
                for handle in self.server.handle_local(wire.PUSH, update, now):
                    deferred.append((s, rank, handle))  # replies to others: after ours
                continue
            body = pack([self.compressor.compress(deltas[i], key=f"t{i}") for i in self.shards[s]])
            h = wire.header(wire.PUSH, clock=self.clock, nbytes=body.numel(), time=now)
            sends.append((s, rank, self._isend(h, rank, "control", wire.REQUEST, s)))
            sends.append((s, rank, self._isend(body, rank, "train", wire.REQUEST_BODY, s)))
        self._settle(sends)  # our pushes left (a lost server is named here, cleanly)
        for s, rank in enumerate(self.server_ranks):
            self._apply(s, self._receive(s, rank))
        self._settle(deferred)
        self.last_sync = self.local_step

    def _isend(self, tensor: torch.Tensor, rank: int, tag: str, channel: int, s: int) -> Any:
        try:
            return self.transport.isend(tensor, rank, tag=tag, channel=channel)
        except CommError as exc:
            raise self._gone(s, rank, exc) from exc

    def _settle(self, sends: list[tuple[int, int, Any]]) -> None:
        for s, rank, handle in sends:
            try:
                handle.wait()
            except CommError as exc:
                raise self._gone(s, rank, exc) from exc

    def _gone(self, s: int, rank: int, exc: BaseException) -> PeerFailedError:
        return PeerFailedError(
            f"parameter server {s} (rank {rank}) did not answer: {exc}", help=_SERVER_GONE
        )

    def _receive(self, s: int, rank: int) -> list[torch.Tensor]:
        """The reply of server ``s``: its shard's values (after any wait the bound imposes)."""
        t = self.transport
        started = time.monotonic()
        limit = 3 * t.timeout_s  # a server names a silent worker after 2 x timeout_s, aborts
        if rank == t.rank:
            assert self.server is not None
            while True:
                try:
                    kind, at, values, stale = self.server.local_out.get(timeout=0.2)
                    break
                except queue.Empty:
                    if self.server.error is not None:
                        raise self.server.error from None
                    if time.monotonic() - started > limit:
                        raise CommTimeoutError(
                            f"parameter server {s} (this agent, rank {rank}) did not answer "
                            f"in {limit:g} s", help=_SERVER_GONE,
                        ) from None  # fmt: skip
            if kind == wire.ABORT:
                raise self._aborted(s, rank, stale)
            self.wait_s += t.clock.meet(at)
        else:
            h = wire.empty_header()
            try:
                t.recv(h, src=rank, tag="control", channel=wire.REPLY, timeout_s=limit)
            except CommError as exc:
                raise self._gone(s, rank, exc) from exc
            msg = wire.parse(h)
            if msg.kind == wire.ABORT:
                raise self._aborted(s, rank, msg.a)
            self.wait_s += t.clock.meet(msg.time)  # before the body: its link time comes after
            body = torch.empty(msg.nbytes, dtype=torch.uint8)
            try:
                t.recv(body, src=rank, tag="train", channel=wire.REPLY_BODY, timeout_s=limit)
            except CommError as exc:
                raise self._gone(s, rank, exc) from exc
            values = wire.unflatten(body, [self.params[i] for i in self.shards[s]])
            stale = msg.a
        self.staleness_seen.append(int(stale))
        return values

    def _aborted(self, s: int, rank: int, culprit: int) -> PeerFailedError:
        who = f"worker rank {culprit} is gone" if culprit >= 0 else "it failed"
        return PeerFailedError(
            f"parameter server {s} (rank {rank}) stopped the run: {who}",
            help="see that agent's log; a lost worker ends a param_server run",
        )

    @torch.no_grad()
    def _apply(self, s: int, values: list[torch.Tensor]) -> None:
        for i, v in zip(self.shards[s], values, strict=True):
            self.anchor[i].copy_(v)
            self.params[i].copy_(v.view_as(self.params[i]))

    # ---- the end ----------------------------------------------------------------------------

    @torch.no_grad()
    def finish(self) -> None:
        """Push what is left, say DONE to every server, take the final parameters."""
        t = self.transport
        if self.is_worker and self.last_sync < self.local_step:
            self._sync()
        self.serve()
        now = t.clock.now()
        sends, deferred = [], []
        for s, rank in enumerate(self.server_ranks):
            if rank == t.rank:
                if self.is_worker:
                    assert self.server is not None
                    for handle in self.server.handle_local(wire.DONE, None, now):
                        deferred.append((s, rank, handle))
                continue
            h = wire.header(wire.DONE, clock=self.clock, time=now)
            sends.append((s, rank, self._isend(h, rank, "control", wire.REQUEST, s)))
        self._settle(sends)
        for s, rank in enumerate(self.server_ranks):
            if rank != t.rank or self.is_worker:
                self._apply(s, self._receive(s, rank))
        self._settle(deferred)
        if self.server is not None:
            self.server.join()
            if not self.is_worker:
                self._apply(self.server.index, self.server.snapshot())
        mine = self.server.report() if self.server is not None else None
        gathered = t.all_gather_object(mine, tag="control") if t.world_size > 1 else [mine]
        self.reports = [r for r in gathered if r is not None]

    def summary(self) -> dict[str, Any]:
        bound = self.config.staleness_bound
        return {
            "param_server": {
                "staleness_bound": "inf" if bound == float("inf") else int(bound),
                "servers": self.reports,
                "max_staleness": max((r["max_staleness"] for r in self.reports), default=0),
                "server_optim": self.config.server_optim,
            }
        }

    # ---- a dedicated server's step ----------------------------------------------------------

    def build_compute(self, **_: Any) -> Compute | None:
        """A dedicated server's role in the loop (:class:`ServerRole`); None for workers."""
        return None if self.is_worker else ServerRole(self)

    def refresh(self) -> None:
        """A dedicated server: its model takes the servers' current values (for evaluation)."""
        assert self.server is not None
        self._apply(self.server.index, self.server.snapshot())
        t = self.transport
        for s, rank in enumerate(self.server_ranks):
            if rank != t.rank:
                sends = [(s, rank, self._isend(wire.header(wire.PULL, time=t.clock.now()), rank,
                                               "control", wire.REQUEST, s))]  # fmt: skip
                self._settle(sends)
                self._apply(s, self._receive(s, rank))

    # ---- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "anchor": [a.clone() for a in self.anchor],
            "clock": self.clock,
            "last_sync": self.last_sync,
            "compressor": self.compressor.state_dict(),
            "server": self.server.state_dict() if self.server is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for a, s in zip(self.anchor, state["anchor"], strict=True):
                a.copy_(s)
        self.clock, self.last_sync = int(state["clock"]), int(state["last_sync"])
        self.compressor.load_state_dict(state["compressor"])
        if self.server is not None and state["server"] is not None:
            self.server.load_state_dict(state["server"])


class ServerRole(Compute):
    """A dedicated server's step: no training; serve, and keep the model it evaluates (the
    servers' values) fresh about twice a second."""

    name = "server"

    def __init__(self, strategy: ParamServer) -> None:
        self.strategy = strategy
        self._refreshed = float("-inf")

    @property
    def model(self) -> torch.nn.Module:
        return self.strategy.model

    def __call__(self, step: int) -> torch.Tensor:
        self.strategy.serve()
        if time.monotonic() - self._refreshed > 0.5:
            self.strategy.refresh()
            self._refreshed = time.monotonic()
        return torch.zeros(())

    def summary(self) -> dict[str, Any]:
        return self.strategy.summary()


@torch.no_grad()
def _broadcast_initial(transport: Any, params: list[torch.Tensor]) -> None:
    """Start every agent (and so every server) from rank 0's parameters (``control``)."""
    if transport.world_size == 1 or not params:
        return
    flat = torch.cat([p.detach().reshape(-1).float() for p in params])
    transport.broadcast(flat, src=0, tag="control")
    offset = 0
    for p in params:
        p.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
