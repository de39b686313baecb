"""Configuration of the Transport (``comm.*``)."""

from __future__ import annotations

from dataclasses import dataclass

from ddla.errors import ConfigError

BACKENDS = ("auto", "gloo", "nccl")


@dataclass(kw_only=True, slots=True)
class CommConfig:
    """How agents talk.

    Example:
        >>> CommConfig(timeout_s=30).backend
        'auto'
    """

    backend: str = "auto"
    """Process-group backend: ``auto`` (NCCL with CUDA, else gloo), ``gloo`` or ``nccl``."""
    timeout_s: float = 120.0
    """Seconds any blocking call may wait before it fails naming the op and peer."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"comm.backend: unknown backend {self.backend!r}",
                help=f"choose one of: {', '.join(BACKENDS)}",
            )
        if not self.timeout_s > 0:
            raise ConfigError(f"comm.timeout_s must be > 0, got {self.timeout_s}")
