"""The registry of launch engines, and what every engine's agent does before ``agent_main``.

An engine is a function ``run(cfg, out, job_factory, resume, faults, progress)`` that starts
``cfg.agents`` agents somewhere, hands each the rendezvous through the environment (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), runs the same
:func:`ddla.agent.agent_main` in each and returns when they are done; the run directory then
holds the summary, model, metrics and checkpoints exactly as with the local launcher. Engine
modules are imported only when chosen, so a missing optional extra costs nothing until asked for.

Example:
    >>> runner("local").__name__
    'run_local'
    >>> runner("nope")
    Traceback (most recent call last):
    ...
    ddla.errors.ConfigError: unknown launch engine 'nope'
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from ddla.config import ENGINES, RunConfig
from ddla.errors import AgentFailedError, ConfigError, DdlaError
from ddla.runfiles import read_agent_errors

#: ``ddla.launch(...)``'s engine signature: (config, out, job_factory, resume, faults, progress).
Runner = Callable[[RunConfig, Path, Any, bool, Any, bool], None]

_RUNNERS: dict[str, tuple[str, str]] = {
    "local": ("ddla.launch.local", "run_local"),
    "ray": ("ddla.launch.ray", "run_ray"),
    "spark": ("ddla.launch.spark", "run_spark"),
    "dask": ("ddla.launch.dask", "run_dask"),
}
assert tuple(_RUNNERS) == ENGINES


def runner(engine: str) -> Runner:
    """The function that runs a job's agents on ``engine`` (imports its module now)."""
    if engine not in _RUNNERS:
        raise ConfigError(
            f"unknown launch engine {engine!r}", help=f"choose one of: {', '.join(ENGINES)}"
        )
    module, name = _RUNNERS[engine]
    return getattr(importlib.import_module(module), name)


def with_engine(cfg: RunConfig, engine: str | None) -> RunConfig:
    """``cfg`` with ``launch.engine`` set to ``engine`` (validated); unchanged when None."""
    if engine is None:
        return cfg
    return dataclasses.replace(cfg, launch=dataclasses.replace(cfg.launch, engine=engine))


def require(module: str, *, engine: str, extra: str) -> ModuleType:
    """Import an engine's library, or say in one line which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"the {engine} launcher needs {module!r}, which is not installed ({exc})",
            help=f"pip install 'ddla[{extra}]'",
        ) from None


def free_port(host: str = "") -> int:
    """A TCP port free on ``host`` (all interfaces by default, for peers on other machines)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def set_rendezvous(
    *, rank: int, world_size: int, local_rank: int, local_world_size: int, addr: str, port: int
) -> None:
    """The env:// rendezvous ``agent_main`` joins, as torchrun would set it."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(local_rank),
        LOCAL_WORLD_SIZE=str(local_world_size),
        MASTER_ADDR=addr,
        MASTER_PORT=str(port),
    )


def local_ranks(hosts: list[str]) -> list[tuple[int, int]]:
    """(local rank, local world size) of each agent, given the host each one runs on.

    >>> local_ranks(["a", "b", "a"])
    [(0, 2), (0, 1), (1, 2)]
    """
    seen: dict[str, int] = {}
    ranks = []
    for host in hosts:
        ranks.append(seen.get(host, 0))
        seen[host] = seen.get(host, 0) + 1
    return [(r, seen[h]) for r, h in zip(ranks, hosts, strict=True)]


#: How to give an engine's workers a Python that has ddla, per engine.
WORKER_PYTHON = {
    "spark": "pip install ddla on every Spark worker, or set PYSPARK_PYTHON (here) to a Python "
    "that has it at the same path on every worker",
    "ray": "pip install ddla in the Python the Ray workers run (or a runtime_env)",
    "dask": "pip install ddla in the Python the Dask workers run",
}


def agent_failure(
    out: Path, engine: str, exc: BaseException, *, detail: str | None = None
) -> DdlaError:
    """ddla's one-line error for a failed run: the root cause the agents recorded under ``out``,
    else ``detail`` or the engine's own error squeezed to one line (its traceback stays in its
    logs)."""
    from ddla.launch.local import _error_types

    records = read_agent_errors(out)
    if records:
        first = records[0]
        cls = _error_types().get(first["type"], AgentFailedError)
        prefix = "" if cls is not AgentFailedError else f"agent {first['rank']}: {first['type']}: "
        return cls(prefix + first["message"], help=first.get("help") or f"see {out}/logs/")
    if isinstance(exc, DdlaError) and detail is None:  # raised before the agent could record it
        return exc
    missing = re.search(r"No module named '([\w.]+)'", str(exc))
    if detail is None and missing:
        # A cluster's workers run their own Python: ddla, torch and their dependencies must be
        # installed there (the engine's error names the first import that failed).
        return AgentFailedError(
            f"the {engine} workers' Python cannot import {missing.group(1)}: "
            "install ddla there (it brings torch and the rest)",
            help=WORKER_PYTHON.get(engine, "install ddla on every worker"),
        )
    if detail is None:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = f"the {engine} job failed: " + (lines[0][:300] if lines else type(exc).__name__)
    return AgentFailedError(detail, help=f"see the per-agent logs in {out}/logs/")


@contextlib.contextmanager
def agent_output(out: Path, engine: str, rank: int) -> Iterator[None]:
    """Send this agent's Python-level stdout/stderr (warnings, prints) to a file of its own,
    ``OUT/logs/<engine>/agent<rank>.out``, as the local launcher does, so the console holds
    ddla's lines only. The engine's workers run one agent per process, so this is safe."""
    path = out / "logs" / engine / f"agent{rank}.out"
    path.parent.mkdir(parents=True, exist_ok=True)
    with (
        path.open("a") as sink,
        contextlib.redirect_stdout(sink),
        contextlib.redirect_stderr(sink),
    ):
        yield


def interrupted(cfg: RunConfig, out: Path) -> AgentFailedError:
    """The error of a run stopped by Ctrl-C, with how to continue it."""
    return AgentFailedError(
        "interrupted; all agents stopped",
        help=f"continue with: ddla run --resume {out}"
        if cfg.train.checkpoint_every
        else "set train.checkpoint_every to be able to resume",
    )
