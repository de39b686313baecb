"""The Ray engine: Ray Train's TorchTrainer runs ``agent_main`` on N Ray workers.

Without ``launch.address`` a local Ray instance is started for the run and shut down after it;
with ``launch.address`` (``auto`` for the cluster this machine belongs to, ``ray://HOST:10001``
for Ray Client) the agents run on that cluster's workers. ``ScalingConfig(num_workers=N,
use_gpu=False)``: one CPU worker per agent, gloo between them. No Ray Tune.

Ray Train builds a process group of its own before the training function runs; the agent needs
the env:// rendezvous ddla's Transport joins (with ddla's timeouts and its control store), so
rank 0 picks a port on its host, the workers agree on it over Ray's group, Ray's group is torn
down and ``agent_main`` runs as under torchrun.

    ddla run --launcher ray --agents 2 --dataset digits
    ddla run --launcher ray --set launch.address=auto --agents 8     # on a Ray cluster node
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from ddla.agent import JobFactory, agent_main
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.launch.engines import (
    agent_failure,
    agent_output,
    free_port,
    interrupted,
    require,
    set_rendezvous,
)


def _agent(args: dict[str, Any]) -> None:
    """One agent, inside a Ray Train worker (a worker thread: no signal handler is installed)."""
    import ray.train
    import torch.distributed as dist

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    port = [free_port() if rank == 0 else 0]
    if dist.is_initialized():
        dist.broadcast_object_list(port, src=0)  # over Ray's group, before it goes
        dist.destroy_process_group()
    set_rendezvous(
        rank=rank,
        world_size=world,
        local_rank=ctx.get_local_rank(),
        local_world_size=ctx.get_local_world_size(),
        # Rank 0's host as Ray Train sets it (Ray never names a node by loopback, so on a local
        # instance, all on this machine, the agents meet on 127.0.0.1 instead).
        addr="127.0.0.1" if args["local"] else os.environ["MASTER_ADDR"],
        port=port[0],
    )
    with agent_output(Path(args["config"]["out"]), "ray", rank):
        agent_main(args["config"], args["job_factory"], args["resume"], args["faults"], False)


def run_ray(
    cfg: RunConfig,
    out: Path,
    job_factory: JobFactory | None,
    resume: bool,
    faults: Any,
    progress: bool,
) -> None:
    """Run the agents as a Ray Train job; raise ddla's one-line error if one fails."""
    if cfg.launch.address is None:
        # Nothing but this machine talks to a local instance: keep it on loopback (Ray names
        # a node by its first interface otherwise). Read when Ray is first imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = require("ray", engine="ray", extra="ray")
    require("ray.train.torch", engine="ray", extra="ray")
    from ray.train import FailureConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    n = cfg.agents
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(
                address=cfg.launch.address,
                # A local instance gets one logical CPU per agent plus one for Train's
                # controller, whatever this machine has: the agents are the whole workload.
                num_cpus=None if cfg.launch.address else n + 1,
                include_dashboard=False,
                logging_level=logging.ERROR,
                log_to_driver=False,  # agents log to OUT/logs; ddla prints the one-line error
                configure_logging=True,
            )
        except ConnectionError as exc:
            raise ConfigError(
                f"cannot reach the Ray cluster at {cfg.launch.address}: "
                + str(exc).strip().splitlines()[0],
                help="start one with `ray start --head`; a cluster with Ray's token "
                "authentication needs RAY_AUTH_MODE=token here too (README: On Ray, Spark or Dask)",
            ) from None
    try:
        trainer = TorchTrainer(
            _agent,
            train_loop_config={
                "config": cfg.to_dict(),
                "job_factory": job_factory,
                "resume": resume,
                "faults": faults,
                "local": started and cfg.launch.address is None,
            },
            torch_config=TorchConfig(backend="gloo", timeout_s=int(cfg.comm.timeout_s)),
            scaling_config=ScalingConfig(num_workers=n, use_gpu=False),
            run_config=RayRunConfig(
                name=f"ddla-{uuid.uuid4().hex[:8]}",
                storage_path=str((out / "logs" / "ray").resolve()),
                failure_config=FailureConfig(max_failures=0),  # a dead agent ends the run
            ),
        )
        trainer.fit()
    except KeyboardInterrupt:
        raise interrupted(cfg, out) from None
    except Exception as exc:  # ray.train.TrainingFailedError and friends
        raise agent_failure(out, "ray", exc) from None
    finally:
        if started:
            ray.shutdown()
