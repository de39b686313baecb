"""Configuration of the synchronization strategy (``sync.*`` in a run file or ``--set``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ddla.choices import check_choices, choice
from ddla.errors import ConfigError
from ddla.sync.drift import DRIFT
from ddla.sync.ssp import SERVER_OPTIMIZERS

#: Default H of each strategy. A periodic strategy synchronizing every step would only add
#: cost to ``allreduce``; DiLoCo's paper uses H=500 for runs of ~88k steps, and these runs are
#: ~2-5k steps, so H=100 keeps a few dozen rounds (local SGD averages parameters, which
#: tolerates less drift: H=20). See docs/benchmarks.md for the measured accuracy.
DEFAULT_EVERY = {"allreduce": 1, "local_sgd": 20, "diloco": 100, "streaming_diloco": 100,
                 "param_server": 1, "gossip": 1}  # fmt: skip

#: ``sync.topology`` values of ``gossip`` (see :mod:`ddla.sync.topology`).
TOPOLOGIES = ("ring", "torus", "exponential", "random")

#: Strategies whose synchronization can run on a communication thread (``sync.background``).
BACKGROUND_STRATEGIES = ("local_sgd", "diloco", "streaming_diloco")

#: ``sync.quantized_reduce`` values; see :func:`ddla.aggregate.compressed_mean`.
QUANTIZED_REDUCE = ("scatter", "gather")


def _strategies() -> list[str]:
    from ddla.sync import STRATEGIES  # late: the registry imports this module

    return sorted(STRATEGIES)


@dataclass(kw_only=True, slots=True)
class SyncConfig:
    """How agents keep their models in agreement.

    Example:
        >>> SyncConfig(strategy="allreduce").strategy
        'allreduce'
        >>> SyncConfig(strategy="diloco", every=100, compress="int8").outer_lr
        0.7
    """

    strategy: str = choice("allreduce", _strategies, noun="strategy")
    """Name of the strategy; one of ``ddla.sync.STRATEGIES``."""
    every: int | None = None
    """Synchronize every H optimizer steps (periodic strategies; ``allreduce`` syncs every step).
    None picks the strategy's default, :data:`DEFAULT_EVERY`."""
    compress: str = "none"
    """Compressor applied to what is exchanged (``none`` sends fp32); a ``ddla.compress`` spec
    such as ``int8``, ``int4``, ``topk:0.01``, ``powersgd:4`` or ``topk:0.01+int8``."""
    quantized_reduce: str = choice("scatter", QUANTIZED_REDUCE, noun="scheme")
    """How int8/int4 payloads are averaged: ``scatter`` (reduce-scatter of quantized chunks +
    all-gather of re-quantized means: 2(N-1)/N payloads per agent, 2(N-1) latency-bound steps)
    or ``gather`` (all-gather of whole payloads: N-1 payloads, N-1 steps; one rounding). See
    docs/compression.md; ``gather`` can be faster on high-latency links with small models."""
    outer_lr: float = 0.7
    """Outer learning rate of ``diloco``/``streaming_diloco`` (``local_sgd`` uses 1)."""
    outer_momentum: float = 0.9
    """Outer Nesterov momentum of ``diloco``/``streaming_diloco`` (``local_sgd`` uses 0)."""
    fragments: int = 4
    """``streaming_diloco``: number of fragments P; each sync moves about 1/P of the model."""
    overlap: int = 0
    """``diloco``/``streaming_diloco``: inner steps τ between sending a fragment (the whole
    model for ``diloco``: the one-step-delayed outer update) and applying its result; the
    transfer runs in the background meanwhile (``sync.background``)."""
    background: str = choice("auto", ("auto", "always", "never"), noun="sync.background value")
    """Send pseudo-gradients on a communication thread over a second process group while the
    agent keeps training (:mod:`ddla.comm.background`): ``auto`` when ``sync.overlap`` > 0,
    ``always`` also with overlap 0 (sent and awaited at once: the same result as ``never``),
    ``never``: the transfer blocks the agent, its result is still held back τ steps.
    ``allreduce``: under ``auto`` the DDP hook of a compressor that is not a plain cast (int8,
    int4, top-k, PowerSGD) averages each bucket on the communication thread while backward
    goes on (:mod:`ddla.sync.ddp_hooks`); ``never`` keeps that mean inside the hook."""
    mix: float = 0.5
    """``diloco``/``streaming_diloco`` with overlap > 0: the applied fragment is ``mix * local +
    (1 - mix) * global`` (α in the paper); with overlap 0 the global value replaces the local."""
    drift: str = choice("none", DRIFT, noun="sync.drift value")
    """``diloco``/``local_sgd``: inner-loop drift correction for non-IID data. ``scaffold``:
    SCAFFOLD's control variates (Karimireddy et al. 2020) estimated from the pseudo-gradients
    the strategy already averages, so no extra bytes (:mod:`ddla.sync.drift`)."""

    servers: int = 1
    """``param_server``: number of servers; the parameters are cut into that many shards of
    whole tensors, balanced by size."""
    server_ranks: str = ""
    """``param_server``: ranks of dedicated servers (``"0"``, ``"0,1"``; as many as
    ``sync.servers``), which hold shards and do not train; empty: servers are co-located with
    the workers of ranks 0..servers-1."""
    staleness: str = "0"
    """``param_server``: the stale-synchronous bound S (Ho et al. 2013): a worker never runs
    more than S clocks ahead of the slowest; ``0`` is synchronous, ``inf`` fully asynchronous."""
    server_optim: str = choice("sgd", SERVER_OPTIMIZERS, noun="server optimizer")
    """``param_server``: the servers' optimizer over the updates workers push (``sgd``,
    ``momentum``, ``adam``)."""
    server_lr: float = 1.0
    """``param_server``: the servers' learning rate. Workers push ``lr * grad`` (or, with
    ``sync.every`` H > 1, the pseudo-gradient of H local steps), so 1.0 with ``sgd`` is plain
    (synchronous or asynchronous) SGD at the workers' learning rate."""
    staleness_scale: bool = False
    """``param_server``: scale an update by ``1/(1+staleness)`` (staleness-aware async SGD)."""
    topology: str = choice("ring", TOPOLOGIES, noun="topology")
    """``gossip``: who averages with whom (``ring``, ``torus``, ``exponential``: one peer per
    round at 2^k hops, ``random``: a fresh random matching each round)."""
    consensus_every: int = 10
    """``gossip``: measure the consensus distance every this many synchronizations."""

    @property
    def staleness_bound(self) -> float:
        """``sync.staleness`` as a number (``inf`` for fully asynchronous)."""
        return float(self.staleness)

    def __post_init__(self) -> None:
        from ddla.compress import build_compressor

        check_choices(self, "sync")
        try:
            bound = float(str(self.staleness).strip())
        except ValueError:
            bound = float("nan")
        if not bound >= 0 or (not math.isinf(bound) and bound != int(bound)):
            raise ConfigError(
                f"sync.staleness must be a whole number >= 0 or inf, got {self.staleness!r}",
                help="0 is synchronous, e.g. 2 or 8 bounded, inf fully asynchronous",
            )
        self.staleness = "inf" if math.isinf(bound) else str(int(bound))
        if self.servers < 1:
            raise ConfigError(f"sync.servers must be >= 1, got {self.servers}")
        if self.consensus_every < 1:
            raise ConfigError(f"sync.consensus_every must be >= 1, got {self.consensus_every}")
        if not self.server_lr > 0:
            raise ConfigError(f"sync.server_lr must be > 0, got {self.server_lr}")
        ranks = self.dedicated_servers()
        if ranks and len(ranks) != self.servers:
            raise ConfigError(
                f"sync.server_ranks names {len(ranks)} ranks, sync.servers is {self.servers}",
                help="name one dedicated rank per server, or leave server_ranks empty "
                "(co-located servers)",
            )
        if self.every is None:
            self.every = DEFAULT_EVERY.get(self.strategy, 1)
        if self.every < 1:
            raise ConfigError(
                f"sync.every must be >= 1, got {self.every}",
                help="sync.every is the number of local steps between synchronizations",
            )
        try:
            build_compressor(self.compress)
        except ConfigError as exc:
            raise ConfigError(f"sync.compress: {exc}", help=exc.help) from None
        if not self.outer_lr > 0:
            raise ConfigError(f"sync.outer_lr must be > 0, got {self.outer_lr}")
        if not 0 <= self.outer_momentum < 1:
            raise ConfigError(f"sync.outer_momentum must be in [0, 1), got {self.outer_momentum}")
        if self.fragments < 1:
            raise ConfigError(f"sync.fragments must be >= 1, got {self.fragments}")
        if not 0 <= self.overlap < self.every:
            raise ConfigError(
                f"sync.overlap must be in [0, sync.every) = [0, {self.every}), got {self.overlap}",
                help="a fragment's result must be applied before that fragment is sent again",
            )
        if not 0 <= self.mix < 1:
            raise ConfigError(f"sync.mix must be in [0, 1), got {self.mix}")
        if self.drift != "none":
            self._check_drift()
        if self.background == "always" and self.strategy not in BACKGROUND_STRATEGIES:
            raise ConfigError(
                f"sync.background=always does not apply to sync.strategy={self.strategy}",
                help=f"background synchronization is for {', '.join(BACKGROUND_STRATEGIES)} "
                "(allreduce's compressed DDP hooks use it under auto); leave sync.background=auto",
            )

    def dedicated_servers(self) -> list[int]:
        """The ranks of dedicated servers (``sync.server_ranks``); empty when co-located."""
        items = [r.strip() for r in str(self.server_ranks).split(",") if r.strip()]
        if not all(r.isdigit() for r in items) or len(set(items)) != len(items):
            raise ConfigError(
                f"sync.server_ranks: {self.server_ranks!r} is not a list of distinct ranks",
                help='write e.g. --set sync.server_ranks="0,1"',
            )
        return sorted(int(r) for r in items)

    def server_roles(self, world_size: int) -> tuple[list[int], list[int]]:
        """``(server ranks, worker ranks)`` of ``param_server`` in a run of ``world_size``."""
        dedicated = self.dedicated_servers()
        if dedicated:
            return dedicated, [r for r in range(world_size) if r not in dedicated]
        return list(range(self.servers)), list(range(world_size))

    def _check_drift(self) -> None:
        if self.strategy not in ("diloco", "local_sgd"):
            raise ConfigError(
                f"sync.drift={self.drift} does not apply to sync.strategy={self.strategy}",
                help="drift correction is for diloco and local_sgd (whole-model syncs); "
                "the federated strategy is sync.strategy=scaffold",
            )
        if self.overlap > 0 or self.background == "always":
            raise ConfigError(
                f"sync.drift={self.drift} needs the mean at the sync step "
                f"(sync.overlap={self.overlap}, sync.background={self.background})",
                help="set sync.overlap=0 and leave sync.background=auto with sync.drift",
            )

    @property
    def in_background(self) -> bool:
        """Whether the periodic strategies send on a communication thread."""
        if self.strategy not in BACKGROUND_STRATEGIES:
            return False
        return self.background == "always" or (self.background == "auto" and self.overlap > 0)


def check_background(config: Any) -> None:
    """Refuse, before agents start, a run whose background synchronization cannot hold.

    The communication thread needs the run-wide group (it makes a second one of every agent)
    and must not share secure aggregation's round counters or the audit chain with the
    training thread.
    """
    sync = config.sync
    if not sync.in_background or config.agents == 1:
        return
    why = None
    if config.security.enabled:
        why = "security.enabled (masks and the audit chain are the training thread's)"
    elif getattr(config.model, "decomposed", False):
        why = "a decomposed model (its replicas synchronize over a subgroup)"
    if why is not None:
        mode = "always" if sync.background == "always" else f"auto with sync.overlap={sync.overlap}"
        raise ConfigError(
            f"sync.background ({mode}) does not combine with {why}",
            help="set sync.background=never: the result is still applied sync.overlap steps "
            "later, the transfer blocks the agent",
        )
