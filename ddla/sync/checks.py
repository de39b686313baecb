"""Run-wide refusals of the point-to-point strategies (``param_server``, ``gossip``), one line
each, before any agent starts (``RunConfig`` calls :func:`check_sync_run`).

Example:
    >>> from ddla.config import RunConfig
    >>> RunConfig.load(None, ["agents=2", "sync.strategy=param_server", "sync.server_ranks=2"])
    Traceback (most recent call last):
    ...
    ddla.errors.ConfigError: sync.server_ranks: rank 2 is not an agent of a run of 2
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ddla.errors import ConfigError

if TYPE_CHECKING:
    from ddla.config import RunConfig

POINT_TO_POINT = ("param_server", "gossip")


def check_sync_run(config: RunConfig) -> None:
    """Refuse what ``param_server``/``gossip`` cannot cover (security, decomposition, roles)."""
    sync = config.sync
    if sync.strategy not in POINT_TO_POINT:
        return
    if config.security.enabled:
        raise ConfigError(
            f"sync.strategy={sync.strategy} with security.enabled: its point-to-point pushes, "
            "pulls and exchanges are not sealed or audited yet",
            help="turn security.enabled off, or use allreduce/local_sgd/diloco for a secured run",
        )
    if config.model.decomposed:
        raise ConfigError(
            f"sync.strategy={sync.strategy} with model.stages / model.tensor_parallel: its "
            "messages carry whole models, not a stage's",
            help="use allreduce, local_sgd or diloco with a decomposed model",
        )
    if sync.strategy == "gossip" and sync.compress != "none":
        raise ConfigError(
            f"sync.compress={sync.compress} with gossip: compressed gossip needs CHOCO-SGD's "
            "error compensation, which is not built",
            help="use sync.compress=none with gossip",
        )
    if sync.strategy == "param_server":
        servers, workers = sync.server_roles(config.agents)
        for r in servers:
            if r >= config.agents:
                raise ConfigError(
                    f"sync.server_ranks: rank {r} is not an agent of a run of {config.agents}",
                    help=f"name ranks 0..{config.agents - 1}",
                )
        if not workers:
            raise ConfigError(
                "sync.server_ranks: every agent is a dedicated server, none trains",
                help="leave at least one agent out of sync.server_ranks",
            )
