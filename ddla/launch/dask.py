"""The Dask engine: one ``agent_main`` task per agent on a dask.distributed cluster.

Without ``launch.address`` a :class:`distributed.LocalCluster` of ``agents`` single-threaded
worker processes lives for the run; with ``launch.address=tcp://HOST:8786`` the agents run on
that scheduler's workers (one per worker, so the cluster needs at least ``agents`` workers).
Each task is pinned to its own worker, sets the env:// rendezvous (MASTER_ADDR is agent 0's
worker host, MASTER_PORT a port free there) and calls the same ``agent_main`` as the local
launcher. This is what dask-pytorch-ddp does (stale since 2021, so not a dependency), minus
its own training loop.

    ddla run --launcher dask --agents 2 --dataset digits
    ddla run --launcher dask --set launch.address=tcp://10.0.0.5:8786 --agents 8
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ddla.agent import JobFactory, agent_main
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.launch.engines import (
    agent_failure,
    agent_output,
    free_port,
    interrupted,
    local_ranks,
    require,
    set_rendezvous,
)


def _agent(
    rendezvous: dict[str, Any],
    config: dict[str, Any],
    job_factory: JobFactory | None,
    resume: bool,
    faults: Any,
) -> bool:
    """One agent, inside a Dask worker (a worker thread: agent_main installs no signal handler)."""
    set_rendezvous(**rendezvous)
    with agent_output(Path(config["out"]), "dask", rendezvous["rank"]):
        agent_main(config, job_factory, resume, faults, progress=False)
    return True


def run_dask(
    cfg: RunConfig,
    out: Path,
    job_factory: JobFactory | None,
    resume: bool,
    faults: Any,
    progress: bool,
) -> None:
    """Run the agents as Dask tasks; raise ddla's one-line error if one fails."""
    dask = require("dask", engine="dask", extra="dask")
    distributed = require("distributed", engine="dask", extra="dask")
    n = cfg.agents
    cluster = None
    # A dead worker must fail its task at once, not have the scheduler retry it elsewhere
    # (the retried agent could never rejoin the run); this reaches the in-process scheduler
    # of a LocalCluster. On a remote cluster the first failed task ends the run just the same.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        try:
            if cfg.launch.address is None:
                cluster = distributed.LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=logging.CRITICAL,
                    memory_limit=0,  # the agents' data is theirs; no pausing or restarting
                )
            client = distributed.Client(cluster or cfg.launch.address, timeout=60)
        except OSError as exc:
            if cluster is not None:
                cluster.close()
            raise ConfigError(
                f"cannot reach the Dask scheduler at {cfg.launch.address}: {exc}",
                help="start one with `dask scheduler` and workers with `dask worker ADDRESS`",
            ) from None
        try:
            _run(distributed, client, cfg, out, job_factory, resume, faults, n)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _run(distributed, client, cfg, out, job_factory, resume, faults, n) -> None:
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])[:n]
    if len(workers) < n:
        raise ConfigError(
            f"the Dask cluster has {len(workers)} worker(s); {n} agents need {n}",
            help=f"start more workers or run with --agents {len(workers)}",
        )
    hosts = [urlparse(w).hostname or "127.0.0.1" for w in workers]
    # The port must be free where agent 0 runs, so ask its worker.
    port = client.submit(free_port, workers=[workers[0]], pure=False).result()
    run_id = uuid.uuid4().hex[:8]
    futures = [
        client.submit(
            _agent,
            {
                "rank": rank,
                "world_size": n,
                "local_rank": local_rank,
                "local_world_size": local_world,
                "addr": hosts[0],
                "port": port,
            },
            cfg.to_dict(),
            job_factory,
            resume,
            faults,
            key=f"ddla-agent-{run_id}-{rank}",
            workers=[worker],
            allow_other_workers=False,
            pure=False,
            retries=0,
        )
        for rank, (worker, (local_rank, local_world)) in enumerate(
            zip(workers, local_ranks(hosts), strict=True)
        )
    ]
    try:
        for future in distributed.as_completed(futures):
            if future.status == "error":
                exc = future.exception()
                rank = futures.index(future)
                # The peers of a dead agent fail soon after it; let them record why, so the
                # root cause (not the first report to arrive) is what we print.
                with contextlib.suppress(TimeoutError):
                    distributed.wait(futures, timeout=min(30.0, cfg.comm.timeout_s))
                client.cancel(futures, force=True)
                detail = (
                    f"agent {rank} died: its Dask worker process exited while running it"
                    if isinstance(exc, distributed.KilledWorker)
                    else None
                )
                raise agent_failure(out, "dask", exc, detail=detail) from None
    except KeyboardInterrupt:
        client.cancel(futures, force=True)
        raise interrupted(cfg, out) from None
