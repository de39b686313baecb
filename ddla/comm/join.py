"""Join the run an elastic launcher or torchrun describes (env://) and create its process group.

Example (what :meth:`ddla.comm.Transport.from_env` does first)::

    store = join_env_group("auto", 60.0)   # RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ddla.comm.config import BACKENDS
from ddla.errors import CommError, CommTimeoutError, ConfigError

_ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def init_group(backend: str, store: Any, *, rank: int, world_size: int, timeout: timedelta) -> Any:
    """Init the default process group on ``store``; return the Store ddla's control plane uses.

    The group uses the prefix ``init_process_group`` itself would (so other tools sharing the
    store agree); ddla's own keys live under ``ddla/``.
    """
    dist.init_process_group(
        backend,
        store=dist.PrefixStore("default_pg", store),
        rank=rank,
        world_size=world_size,
        timeout=timeout,
    )
    return dist.PrefixStore("ddla/", store)


def join_env_group(backend: str, timeout_s: float) -> Any:
    """Rendezvous through env://, init the default process group, return ddla's Store.

    ``backend="auto"`` picks NCCL when CUDA is available, else gloo; ``timeout_s`` bounds the
    rendezvous and is the group's own timeout.
    """
    if backend not in BACKENDS:
        raise ConfigError(
            f"unknown communication backend {backend!r}",
            help=f"choose one of: {', '.join(BACKENDS)}",
        )
    missing = [name for name in _ENV_VARS if name not in os.environ]
    if missing:
        raise ConfigError(
            f"cannot join the run: environment variables {', '.join(missing)} are not set",
            help="start agents with `ddla run` or torchrun, which set them",
        )
    if dist.is_initialized():
        raise CommError(
            "torch.distributed is already initialized in this process",
            help="wrap the existing group with Transport(group=...) instead",
        )
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    limit = timedelta(seconds=timeout_s)
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    store = None
    try:
        store, rank, world_size = next(dist.rendezvous("env://", timeout=limit))
        store.set_timeout(limit)
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or "0"
        if restart != "0":
            # The elastic agent's c10d rendezvous hands every attempt the same TCPStore, and
            # env:// adds no per-attempt prefix (it assumes a new store per retry): a
            # restarted agent would read the failed attempt's keys, gloo's mesh addresses
            # among them, and dial a peer that is gone (seen here: every restart of forked
            # agents, 1 in 2 of spawned ones).
            store = dist.PrefixStore(f"ddla-attempt-{restart}", store)
        # Mark this agent as arrived, so a join that times out can name who never did.
        store.set(f"ddla-joined/{rank}", "1")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        ddla_store = init_group(backend, store, rank=rank, world_size=world_size, timeout=limit)
    except RuntimeError as exc:
        missing = _not_arrived(store, int(os.environ["WORLD_SIZE"]))
        who = (
            f"agent(s) {', '.join(map(str, missing))} never arrived; "
            if missing
            else "every agent arrived but the group did not form; "
        )
        raise CommTimeoutError(
            f"could not join the run at {where} within {timeout_s:g} s: "
            f"{who if store is not None else ''}{exc}",
            help="check that every agent started and that MASTER_ADDR/MASTER_PORT are "
            "reachable from this machine",
        ) from exc
    return ddla_store


def _not_arrived(store: Any, world_size: int) -> list[int]:
    """Ranks whose arrival mark is not in ``store`` (empty when the store cannot be read)."""
    if store is None:
        return []
    try:
        return [r for r in range(world_size) if not store.check([f"ddla-joined/{r}"])]
    except RuntimeError:
        return []
