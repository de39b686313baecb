"""``profile.*``: whether a run records traces, and over which steps.

Example:
    >>> ProfileConfig(enabled=True).window(total_steps=8)
    (0, 8)
    >>> parse_steps("10:30")
    (10, 30)
    >>> parse_steps("30:10")
    Traceback (most recent call last):
    ...
    ddla.errors.ConfigError: profile.steps='30:10': the window ends before it starts
"""

from __future__ import annotations

from dataclasses import dataclass

from ddla.errors import ConfigError

#: Steps profiled by ``--profile`` alone: the first 20 (clipped to the run's length).
DEFAULT_STEPS = "0:20"
_HELP = (
    "write profile.steps=A:B with 0 <= A < B: steps A to B-1, counted from 0, e.g. 0:20 "
    "(quoted in a YAML file: steps: '0:20', which YAML would read as a number)"
)


def parse_steps(spec: str) -> tuple[int, int]:
    """``"A:B"`` -> ``(A, B)``: the steps ``A`` to ``B - 1`` (0-based, like a Python slice).

    Raises:
        ConfigError: not two integers ``0 <= A < B`` around one colon.
    """
    text = str(spec).strip()
    head, sep, tail = text.partition(":")
    try:
        if not sep:
            raise ValueError
        a, b = int(head), int(tail)
    except ValueError:
        raise ConfigError(
            f"profile.steps={text!r} is not a window A:B of step numbers", help=_HELP
        ) from None
    if a < 0:
        raise ConfigError(f"profile.steps={text!r}: steps are counted from 0", help=_HELP)
    if b <= a:
        raise ConfigError(f"profile.steps={text!r}: the window ends before it starts", help=_HELP)
    return a, b


@dataclass(kw_only=True, slots=True)
class ProfileConfig:
    """Profiling of a run (``--profile``; see ``docs/profiling.md``)."""

    enabled: bool = False
    """Record torch.profiler traces with ddla's spans on every agent (``ddla run --profile``)."""
    steps: str | None = None
    """Window ``A:B``: steps A to B-1, counted from 0 (default 0:20, clipped to the run).
    Setting it turns profiling on."""

    def __post_init__(self) -> None:
        if self.steps is not None:
            parse_steps(self.steps)  # refuse a malformed window before any agent starts
            self.enabled = True  # a window is a request to profile, never silently ignored

    def window(self, *, total_steps: int) -> tuple[int, int]:
        """The profiled steps ``(A, B)`` of a run of ``total_steps``; B is clipped to the run.

        Raises:
            ConfigError: the window starts at or after the run's last step.
        """
        a, b = parse_steps(self.steps or DEFAULT_STEPS)
        if a >= total_steps:
            raise ConfigError(
                f"profile.steps={self.steps}: the run has only {total_steps} steps "
                f"(0 to {total_steps - 1}), so the window would record nothing",
                help=f"start the window before step {total_steps}, e.g. profile.steps=0:"
                f"{min(total_steps, 20)}",
            )
        return a, min(b, total_steps)
