"""Fault tolerance settings (``fault.*``) and the faults a run injects into itself.

Periodic strategies (``local_sgd``, ``diloco``, ``streaming_diloco``) survive a lost agent:
the others regroup at the next synchronization and go on (:mod:`ddla.comm.elastic`), and a
restarted agent rejoins by pulling the current state from a live peer. ``allreduce`` syncs
inside every backward pass (DDP), where no step can be redone among fewer agents without
rebuilding DDP; it follows torchelastic's model instead: the launcher restarts every agent
from the last committed checkpoint (``fault.max_restarts``), losing at most
``train.checkpoint_every`` steps.

Faults are data: ``--set fault.kill=1@30`` kills agent 1 when it reaches step 30,
``fault.stop=2@40`` freezes agent 2 (SIGSTOP), several as ``"1@30,3@60"``; ``fault.slow=3:3``
makes agent 3's computation three times slower (a straggler, :mod:`ddla.compute.straggler`).

Example:
    >>> FaultConfig(kill="1@30,0@50").injector().faults[1].rank
    0
    >>> FaultConfig(kill="1-30")
    Traceback (most recent call last):
    ...
    ddla.errors.ConfigError: fault.kill: '1-30' is not RANK@STEP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ddla.choices import check_choices, choice
from ddla.errors import ConfigError

if TYPE_CHECKING:
    from ddla.config import RunConfig
    from ddla.testing import FaultInjector

#: Strategies whose synchronizations can be redone among the survivors.
SURVIVING = ("local_sgd", "diloco", "streaming_diloco")


def _parse(spec: str, name: str) -> list[tuple[int, int]]:
    pairs = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        rank, sep, step = item.partition("@")
        if not sep or not rank.isdigit() or not step.isdigit() or int(step) < 1:
            raise ConfigError(
                f"fault.{name}: {item!r} is not RANK@STEP",
                help=f"write e.g. --set fault.{name}=1@30 (agent 1 at step 30; steps from 1)",
            )
        pairs.append((int(rank), int(step)))
    return pairs


@dataclass(kw_only=True, slots=True)
class FaultConfig:
    """How a run handles lost agents, and faults to inject (for tests and chaos runs)."""

    survive: str = choice("auto", ("auto", "required", "never"), noun="fault.survive value")
    """``auto``: periodic strategies carry on without a lost agent, others fail (or restart
    from a checkpoint, see ``max_restarts``); ``required``: the same, refused where impossible;
    ``never``: any lost agent ends the run."""
    max_restarts: int = 0
    """Times the launcher restarts agents after a failure: the lost agent alone (it rejoins
    from a live peer) when the run survives, else every agent from the last checkpoint."""
    rejoin_timeout_s: float = 600.0
    """How long a restarted agent waits for the others' next synchronization to admit it."""
    rejoin_wait_s: float = 0.0
    """How long a synchronization waits for an agent the launcher is restarting to be back
    (0: never wait, it joins at a later sync); below ``comm.timeout_s``, or the agents that
    did not wait would time out waiting for those that do."""
    kill: str = ""
    """Inject: ``RANK@STEP[,RANK@STEP]`` hard-exits that agent when it reaches that step."""
    stop: str = ""
    """Inject: ``RANK@STEP[,...]`` freezes that agent with SIGSTOP (alive, not answering)."""
    slow: str = ""
    """Inject: ``RANK:FACTOR[,...]`` makes that agent's computation FACTOR (>= 1) times slower,
    in every clock (``real`` sleeps; ``virtual``/``virtual-cpu`` also add the time to the
    reading), so the report's compute/link/wait split shows who waits for whom."""

    def __post_init__(self) -> None:
        check_choices(self, "fault")
        if self.max_restarts < 0:
            raise ConfigError(f"fault.max_restarts must be >= 0, got {self.max_restarts}")
        if self.rejoin_wait_s < 0:
            raise ConfigError(f"fault.rejoin_wait_s must be >= 0, got {self.rejoin_wait_s}")
        if not self.rejoin_timeout_s > 0:
            raise ConfigError(f"fault.rejoin_timeout_s must be > 0, got {self.rejoin_timeout_s}")
        _parse(self.kill, "kill")
        _parse(self.stop, "stop")
        parse_slow(self.slow)

    def slowdown(self, rank: int) -> float:
        """The factor by which agent ``rank``'s computation is slowed (1.0: not a straggler).

        Example:
            >>> FaultConfig(slow="3:3,1:1.5").slowdown(3), FaultConfig().slowdown(0)
            (3.0, 1.0)
        """
        return dict(parse_slow(self.slow)).get(rank, 1.0)

    def injector(self) -> FaultInjector | None:
        """The injected faults as a :class:`~ddla.testing.FaultInjector` (None if none)."""
        from ddla.testing import FaultInjector

        injector = FaultInjector()
        for rank, step in _parse(self.kill, "kill"):
            injector.kill(rank=rank, at_step=step)
        for rank, step in _parse(self.stop, "stop"):
            injector.stop(rank=rank, at_step=step)
        return injector if len(injector) else None


def parse_slow(spec: str) -> list[tuple[int, float]]:
    """``"3:3,1:1.5"`` -> ``[(3, 3.0), (1, 1.5)]``; refuses anything else in one line."""
    pairs = []
    for item in filter(None, (s.strip() for s in str(spec).split(","))):
        rank, sep, factor = item.partition(":")
        try:
            value = float(factor)
        except ValueError:
            value = float("nan")
        if not sep or not rank.strip().isdigit() or not value >= 1 or value == float("inf"):
            raise ConfigError(
                f"fault.slow: {item!r} is not RANK:FACTOR with FACTOR >= 1",
                help="write e.g. --set fault.slow=3:3 (agent 3 computes 3x slower; quoted in "
                "a YAML file: slow: '3:3', which YAML would read as a number)",
            )
        pairs.append((int(rank), value))
    return pairs


def survives(config: RunConfig) -> bool:
    """Whether this run's agents carry on without a lost peer (``fault.survive``)."""
    fault = config.fault
    return fault.survive == "required" or (
        fault.survive == "auto"
        and config.sync.strategy in SURVIVING
        and not config.security.enabled
        and config.agents > 1
        and not _unsupported(config)
    )


def _unsupported(config: RunConfig) -> str | None:
    """Why this run's layout cannot change membership yet (None when it can)."""
    if getattr(config.model, "decomposed", False):
        return "a decomposed model (model.stages / model.tensor_parallel) needs every stage"
    if getattr(config.data, "source", None) is not None:
        return "per-agent data (data.source) is agreed once, among the agents that started"
    if getattr(config.data, "preprocess", "none") != "none":
        # A restarted agent would fit it alone, on its own shard, and hold another transform.
        return "data.preprocess is fitted once, among the agents that started"
    if config.sync.in_background:
        return (
            "background synchronization (sync.background, on with sync.overlap > 0) keeps a "
            "second process group that a new membership does not rebuild yet"
        )
    return None


def check_faults(config: RunConfig) -> None:
    """Refuse, before agents start, what ``fault.*`` cannot cover."""
    fault = config.fault
    named = [r for r, _ in _parse(fault.kill, "kill") + _parse(fault.stop, "stop")]
    for rank in named + [r for r, _ in parse_slow(fault.slow)]:
        if rank >= config.agents:
            raise ConfigError(
                f"fault: agent {rank} does not exist (the run has {config.agents} agents)",
                help=f"name an agent 0..{config.agents - 1}",
            )
    if fault.rejoin_wait_s >= config.comm.timeout_s:
        raise ConfigError(
            f"fault.rejoin_wait_s ({fault.rejoin_wait_s:g}) must be below comm.timeout_s "
            f"({config.comm.timeout_s:g})",
            help="an agent that did not wait would time out waiting for those that do",
        )
    if fault.survive != "required":
        return
    if config.sync.strategy not in SURVIVING:
        raise ConfigError(
            f"fault.survive=required: {config.sync.strategy} cannot carry on without a lost agent",
            help=f"use one of {', '.join(SURVIVING)}, or fault.survive=auto with "
            "fault.max_restarts and train.checkpoint_every (restart from a checkpoint)",
        )
    why = _unsupported(config)
    if why is not None:
        raise ConfigError(
            f"fault.survive=required: {why}",
            help="use fault.survive=auto (the run then ends on a lost agent)",
        )
    if config.security.enabled:
        raise ConfigError(
            "fault.survive=required with security.enabled is not supported yet: the masks of "
            "secure aggregation and the sealed state pull need the pair keys of a new membership",
            help="turn security off for a run that must survive lost agents",
        )


def summary_entries(elastic: Any) -> dict[str, Any]:
    """``summary.json``'s ``faults`` (and ``members``); empty lists for a run without them."""
    if elastic is None:
        return {"faults": []}
    return elastic.summary()
