"""Configuration of the Transport (``comm.*``)."""

from __future__ import annotations

from dataclasses import dataclass

from ddla.choices import check_choices, choice
from ddla.comm.clock import CLOCKS
from ddla.comm.links import LinkTable, parse_overrides, parse_profile
from ddla.errors import ConfigError

BACKENDS = ("auto", "gloo", "nccl")


@dataclass(kw_only=True, slots=True)
class CommConfig:
    """How agents talk.

    Example:
        >>> CommConfig(timeout_s=30).backend
        'auto'
    """

    backend: str = choice("auto", BACKENDS, noun="backend")
    """Process-group backend: ``auto`` (NCCL with CUDA, else gloo), ``gloo`` or ``nccl``."""
    timeout_s: float = 120.0
    """Seconds any blocking call may wait before it fails naming the op and peer."""
    link: str = "lan"
    """Emulated link between agents: ``lan`` (none), ``dc``, ``wan``, ``wan-100``, ``edge`` or
    ``RATE:DELAY`` such as ``100mbit:25ms`` (see :mod:`ddla.comm.links`)."""
    link_overrides: str = ""
    """Agents behind another link, ``RANK=PROFILE`` pairs: ``"3=edge"`` puts agent 3 in a far
    data center, ``"2=wan-100,3=edge"`` two of them."""
    clock: str = choice(
        "real", tuple(CLOCKS), noun="clock", note=" (virtual: no sleeping, for sweeps)"
    )
    """``real``: emulated link time is slept, wall-clock is true; ``virtual``: it is added to a
    simulated clock without sleeping (fast sweeps); ``virtual-cpu``: the same, with compute
    counted as CPU time, as on a dedicated core. Every reported time names its clock."""

    def __post_init__(self) -> None:
        check_choices(self, "comm")
        if not self.timeout_s > 0:
            raise ConfigError(f"comm.timeout_s must be > 0, got {self.timeout_s}")
        try:
            parse_profile(self.link)
        except ConfigError as exc:
            raise ConfigError(f"comm.link: {exc}", help=exc.help) from None
        # Normalised to "r=spec,r=spec"; ranks are checked against agents by check_agents().
        self.link_overrides = ",".join(
            f"{rank}={spec}" for rank, spec in parse_overrides(self.link_overrides).items()
        )

    def check_agents(self, agents: int) -> None:
        """Fail at configuration time when an override names an agent the run does not have."""
        self.link_table(agents)

    def link_table(self, world_size: int) -> LinkTable:
        """The links of a run of ``world_size`` agents (raises ConfigError on a missing agent)."""
        return LinkTable.build(self.link, self.link_overrides, world_size=world_size)
