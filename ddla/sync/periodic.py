"""The engine shared by ``local_sgd``, ``diloco`` and ``streaming_diloco``.

Each agent trains alone with its own (inner) optimizer. The strategy keeps a *global copy* of
the parameters, identical on every agent, cut into fragments (one for local SGD and DiLoCo).
When a fragment is due (:func:`~ddla.sync.fragments.due_fragments`), every agent computes its
pseudo-gradient ``global - local`` for that fragment, the agents average it with
:class:`~ddla.aggregate.Aggregator` (so any compressor applies, masking and auditing when on,
and error feedback keys are per fragment tensor), the outer optimizer applies the mean to the
global copy, and the local fragment is replaced by the global one — at once, or ``overlap``
steps later mixed with the local value (streaming DiLoCo). Floating-point buffers (e.g.
BatchNorm statistics) are averaged uncompressed with fragment 0. :meth:`finish` synchronizes
every fragment that moved since its last sync, so all agents end with identical parameters.
With one agent nothing is sent and the outer optimizer still runs.

With ``sync.background`` (on by default when ``sync.overlap`` τ > 0) the mean is taken on a
communication thread over a second process group (:class:`~ddla.comm.background.
BackgroundChannel`) while the agent keeps training: the pseudo-gradient is computed when the
fragment is due, the outer step runs when its mean has arrived and is needed (τ steps later),
then the merge. The outer step of one fragment reads and writes only that fragment's global
copy and momentum, so the parameters are bitwise those of ``sync.background=never`` (where the
transfer blocks and the result is held back). BatchNorm-like buffers averaged with fragment 0
are those of the send step, written at the apply step. A checkpoint waits for the transfers in
flight and saves their outer steps, in the same format as the blocking path.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ddla.errors import ConfigError
from ddla.sync.base import Strategy
from ddla.sync.drift import DriftCorrection
from ddla.sync.fragments import due_fragments, split_fragments
from ddla.sync.outer import build_outer_optimizer, mix, outer_step, pseudo_gradient


class PeriodicOuterSync(Strategy):
    """Base of the DiLoCo family; subclasses choose the outer settings in :meth:`settings`."""

    name: ClassVar[str] = "periodic"
    default_optimizer: ClassVar[str] = "adamw"

    def settings(self) -> dict[str, Any]:
        """Outer ``lr``, ``momentum``, number of ``fragments``, ``overlap`` and ``mix``."""
        c = self.config
        return {"lr": c.outer_lr, "momentum": c.outer_momentum, "fragments": 1, "overlap": 0,
                "mix": 0.0}  # fmt: skip

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        s = self.settings()
        self.every: int = self.config.every
        self.overlap: int = s["overlap"]
        self.mix_alpha: float = s["mix"]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self._broadcast_initial()
        self.fragments = split_fragments([tuple(p.shape) for p in self.params], s["fragments"])
        self.anchor = [
            [sl.view(self.params[sl.index].detach()).clone().float() for sl in frag]
            for frag in self.fragments
        ]
        self.outer = build_outer_optimizer(
            [a for frag in self.anchor for a in frag], lr=s["lr"], momentum=s["momentum"]
        )
        #: (step at which to apply, fragment) for results in flight (overlap > 0).
        self.pending: list[tuple[int, int]] = []
        self.last_sync = [0] * len(self.fragments)
        #: The communication thread and its second group (``sync.background``), else None.
        self.channel = None
        #: Fragment -> its mean (and averaged buffers) in flight on the channel.
        self.inflight: dict[int, Any] = {}
        if self.config.in_background and self.transport.world_size > 1 and self.params:
            self._open_channel()
        #: SCAFFOLD-style control variates of the inner loop (``sync.drift``), else None.
        self.drift: DriftCorrection | None = None
        if self.config.drift == "scaffold":
            group = {id(p): g for g in self.optimizer.param_groups for p in g["params"]}
            sliced = [self.params[sl.index] for sl in self.fragments[0]]
            self.drift = DriftCorrection(self._views(0), [group[id(p)] for p in sliced])

    def _open_channel(self) -> None:
        from ddla.aggregate import Aggregator
        from ddla.comm.background import BackgroundChannel

        if self.aggregator.protection.masking is not None or self.aggregator.protection.audit:
            raise ConfigError(
                "sync.background cannot run secure aggregation or the audit log on a "
                "communication thread (their round counters and chain are the training thread's)",
                help="set sync.background=never with security.enabled",
            )
        self.channel = BackgroundChannel(self.transport)
        # The same compressor object: its error-feedback state is only touched by the jobs.
        self.bg_aggregator = Aggregator(
            self.channel.transport, compressor=self.compressor, scatter=self.aggregator.scatter
        )

    def _broadcast_initial(self) -> None:
        """Start every agent from rank 0's parameters (a 'control' message, not training).

        A resumed agent loads its own checkpointed (local, not yet synchronized) parameters
        after the strategy is built (``ddla.agent.train``), so this broadcast never overwrites
        them.
        """
        if self.transport.world_size == 1 or not self.params:
            return
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1).float() for p in self.params])
            self.transport.broadcast(flat, src=0, tag="control")
            offset = 0
            for p in self.params:
                p.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()

    def _views(self, f: int) -> list[torch.Tensor]:
        return [sl.view(self.params[sl.index].detach()) for sl in self.fragments[f]]

    def after_step(self) -> None:
        if self.channel is not None and self.elastic is not None:
            raise ConfigError(
                "sync.background with a membership that changes (fault.survive) is not "
                "supported: the second process group is not rebuilt among survivors",
                help="set sync.background=never, or fault.survive=never",
            )
        step = self.local_step
        if self.drift is not None:
            self.drift.inner_step()
        due_now = due_fragments(step=step, every=self.every, fragments=len(self.fragments))
        for f in due_now:
            self._sync(f, step, apply_now=self.overlap == 0)
        if due_now and self.elastic is not None:  # restarted agents join at a sync
            self.elastic.admit(step)
        due = [(at, f) for at, f in self.pending if at <= step]
        self.pending = [(at, f) for at, f in self.pending if at > step]
        for _, f in due:
            self._merge(f, self.mix_alpha)

    @torch.no_grad()
    def _sync(self, f: int, step: int, *, apply_now: bool) -> None:
        views = self._views(f)
        grads = pseudo_gradient(self.anchor[f], views)
        keys = [f"{f}.{i}" for i in range(len(views))]
        self.last_sync[f] = step
        if self.channel is not None:
            self._send(f, grads, keys)
        else:
            mean = self._collective(lambda: self.aggregator.mean(grads, keys=keys, tag="train"))
            outer_step(self.outer, self.anchor[f], mean)
            if self.drift is not None:
                self.drift.after_sync(grads, mean)
            if f == 0:
                self._collective(self._average_buffers)
        if apply_now:
            self._merge(f, 0.0)
        else:
            self.pending.append((step + self.overlap, f))

    def _send(self, f: int, grads: list[torch.Tensor], keys: list[str]) -> None:
        """Queue fragment ``f``'s mean (and, for fragment 0, the buffers') on the channel."""
        buffers = [b for b in self.model.buffers() if b.is_floating_point()] if f == 0 else []
        flat = torch.cat([b.reshape(-1).float() for b in buffers]) if buffers else None
        agg = self.bg_aggregator

        def job(_transport: Any) -> tuple[list[torch.Tensor], torch.Tensor | None]:
            mean = agg.mean(grads, keys=keys, tag="train")
            if flat is not None:
                agg.mean_(flat, tag="train")
            return mean, flat

        assert self.channel is not None
        self.inflight[f] = (self.channel.submit(job, what=f"fragment {f}"), False)

    @torch.no_grad()
    def _land(self, f: int, *, wait_clock: bool = True) -> None:
        """Fragment ``f``'s mean in flight: its outer step (once), and, with ``wait_clock``,
        the wait for its modelled arrival (then it is no longer in flight)."""
        if f not in self.inflight:
            return
        pending, stepped = self.inflight[f]
        if not stepped:
            mean, flat = pending.result()
            outer_step(self.outer, self.anchor[f], mean)
            if flat is not None:
                buffers = [b for b in self.model.buffers() if b.is_floating_point()]
                offset = 0
                for b in buffers:
                    b.copy_(flat[offset : offset + b.numel()].view_as(b))
                    offset += b.numel()
            self.inflight[f] = (pending, True)
        if wait_clock:
            pending.wait()
            del self.inflight[f]

    @torch.no_grad()
    def _merge(self, f: int, alpha: float) -> None:
        self._land(f)
        for view, global_ in zip(self._views(f), self.anchor[f], strict=True):
            if alpha == 0.0:
                view.copy_(global_)
            else:
                mix(view, global_, alpha)

    @torch.no_grad()
    def _average_buffers(self) -> None:
        buffers = [b for b in self.model.buffers() if b.is_floating_point()]
        if self.transport.world_size == 1 or not buffers:
            return
        flat = torch.cat([b.reshape(-1).float() for b in buffers])
        self.aggregator.mean_(flat, tag="train")
        offset = 0
        for b in buffers:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()

    def finish(self) -> None:
        """Sync every fragment that trained since its last sync; all agents end identical."""
        for f in list(self.inflight):
            self._land(f)
        step = self.local_step
        in_flight = {f for _, f in self.pending}
        self.pending = []
        for f in range(len(self.fragments)):
            if self.last_sync[f] < step:
                self._sync(f, step, apply_now=True)
            elif f in in_flight:
                self._merge(f, 0.0)

    def close(self) -> None:
        super().close()
        if self.channel is not None:
            self.channel.close()

    def state_dict(self) -> dict[str, Any]:
        # A transfer in flight is joined and its outer step taken: the saved state is that of
        # the blocking path (anchor updated, merge pending), and resumes need no channel state.
        for f in list(self.inflight):
            self._land(f, wait_clock=False)
        return {
            **super().state_dict(),
            "anchor": [[a.clone() for a in frag] for frag in self.anchor],
            "outer": self.outer.state_dict(),
            "compressor": self.compressor.state_dict(),
            "pending": list(self.pending),
            "last_sync": list(self.last_sync),
            **({"drift": self.drift.state_dict()} if self.drift is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            for frag, saved in zip(self.anchor, state["anchor"], strict=True):
                for a, s in zip(frag, saved, strict=True):
                    a.copy_(s)
        self.outer.load_state_dict(state["outer"])
        self.compressor.load_state_dict(state["compressor"])
        self.pending = [(int(at), int(f)) for at, f in state["pending"]]
        self.last_sync = [int(s) for s in state["last_sync"]]
        if self.drift is not None:
            self.drift.load_state_dict(state["drift"])
