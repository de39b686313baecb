"""One agent's life: join -> data -> model -> train loop -> merge. The only training loop.

Every agent runs :func:`agent_main`, whether started by ``ddla run`` (PyTorch's elastic launcher
on this machine) or by ``torchrun`` on several machines::

    torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m ddla.agent --config run.yaml --set data.dataset=digits

Life of one step: the loop calls this agent's :class:`~ddla.compute.Compute` (a data-parallel
replica: batch from this agent's shard -> forward/backward -> optimizer step, whose post-hook
lets the strategy synchronize through its Aggregator and the Transport) -> meters -> sinks.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddla.checkpoint import (
    commit_checkpoint,
    file_sha256,
    read_agent_state,
    write_agent_state,
)
from ddla.comm import Transport
from ddla.compute import Replica
from ddla.config import RunConfig
from ddla.data import AgentBatches, partition
from ddla.data.cache import take_rows
from ddla.data.sharing import parse_share
from ddla.data.sources import agree_job
from ddla.errors import ConfigError, DdlaError
from ddla.job import Job, job_from_config, site_job
from ddla.metrics import ConsoleProgress, JsonlSink, startup
from ddla.metrics.evaluator import Evaluator, build_summary
from ddla.metrics.tensorboard import TeeSink, TensorBoardSink
from ddla.metrics.timer import AgentTimer
from ddla.models import save_model
from ddla.optim import build_optimizer
from ddla.runfiles import METRICS, SUMMARY, atomic_write_json, trim_metrics, write_agent_error
from ddla.security.runtime import secure_join
from ddla.sync import STRATEGIES, build_strategy

log = logging.getLogger("ddla.agent")

JobFactory = Callable[[], Job]


def _setup_logging(out: Path, rank: int) -> None:
    (out / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "logs" / f"agent{rank}.log", mode="a")
    handler.setFormatter(logging.Formatter(f"%(asctime)s agent{rank} %(levelname)s %(message)s"))
    root = logging.getLogger("ddla")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def train(
    job: Job | Callable[[Transport], Job],
    config: RunConfig,
    transport: Transport,
    *,
    resume: bool = False,
    faults: Any = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Train ``job`` as this agent; return the run summary on rank 0 (None elsewhere).

    ``job`` may be a function of the (authenticated) Transport: per-agent sources are agreed
    on after the security handshake, so descriptors only go to authenticated peers.
    """
    rank, world = transport.rank, transport.world_size
    out = Path(config.out)
    tc = config.train
    # Authenticate before any model or data flows; with secure aggregation the returned
    # Transport masks every averaged update.
    security = secure_join(config.security, transport, out)
    protection = security.protection if security is not None else None
    startup.mark("secured")
    if not isinstance(job, Job):
        job = job(transport)
    share = parse_share(config.data.share)
    puller = None
    site_test = job.site_test
    if job.is_local:  # each agent's own data: nothing to partition, agree on it first
        if share or config.data.pull_every:
            raise ConfigError(
                "data.share and data.pull_every need one partitioned dataset, not per-agent data",
                help="unset data.share and data.pull_every",
            )
        if job.agreement is None:
            site, job.agreement = agree_job(job, transport)
            (x_train, y_train), site_test = site.train, site.site_test
        else:
            x_train, y_train = job.train  # type: ignore[misc]
        shard = np.arange(len(y_train))
    else:
        x_train, y_train = job.train  # type: ignore[misc]
        shard = partition(config.data.partition, y_train.numpy(), world, tc.seed)[rank]
        if share and security is not None:
            x_train, y_train, shard = security.share_pool(
                x_train, y_train, shard, fraction=share, seed=tc.seed
            )
        if config.data.pull_every and security is not None:
            puller = security.puller(
                x=x_train,
                y=y_train,
                shard=shard,
                num_classes=job.num_classes,
                every=config.data.pull_every,
                count=config.data.pull_count,
                seed=tc.seed,
            )
        if not share and puller is None:
            # Keep this agent's rows only, read from the dataset cache's file when it is one:
            # resident memory grows with the shard, not the dataset. Same samples in the same
            # order (positions into the shard replace global indices), so results are equal.
            x_train, y_train = take_rows(x_train, shard), y_train[torch.from_numpy(shard)]
            shard = np.arange(len(shard))
    if callable(site_test):
        site_test = site_test(rank)
    batches = AgentBatches(shard, batch_size=config.data.batch_size, seed=tc.seed, rank=rank)
    log.info("shard of %d samples, %d agents, strategy %s", len(shard), world, config.sync.strategy)

    model = job.model
    state = read_agent_state(out, rank=rank) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
    default_opt = STRATEGIES[config.sync.strategy].default_optimizer
    optimizer = (
        job.optimizer(model.parameters())
        if job.optimizer is not None
        else build_optimizer(config.optim, model.parameters(), default=default_opt)
    )
    strategy = build_strategy(
        config.sync, transport=transport, model=model, optimizer=optimizer, protection=protection
    )
    start = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        strategy.load_state_dict(state["strategy"])
        transport.stats.load_state_dict(state["comm_stats"])
        torch.set_rng_state(state["rng"])
        start = int(state["step"])
        log.info("resumed at step %d", start)
    timer = AgentTimer(transport, state["timer"] if state else None)
    if puller is not None and start:  # resumed: redo earlier pulls so the data is the same
        puller.replay(start, tc.steps)
        x_train, y_train = puller.x, puller.y
        batches = AgentBatches(
            puller.shard, batch_size=config.data.batch_size, seed=tc.seed, rank=rank
        )

    sink = None
    if rank == 0:
        if resume:
            trim_metrics(out / METRICS, after_step=start)
        sink = JsonlSink(out / METRICS, append=resume)
        if config.tensorboard:
            sink = TeeSink(sink, TensorBoardSink(out / "tb", purge_step=start if resume else None))
    evaluator = Evaluator(job, config, strategy.aggregator, sink, site_test=site_test)
    strategy.train_model.train()

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(batches.batch(step))  # batches and data grow with pulls
        return x_train[idx], y_train[idx]

    compute = Replica(strategy=strategy, optimizer=optimizer, loss=job.loss, batch=batch)
    bar = ConsoleProgress(
        total=tc.steps,
        description=f"{config.sync.strategy} x{world}",
        enabled=progress and rank == 0,
    )
    startup.mark("ready")
    try:
        with bar:
            bar.update(start)
            for step in range(start, tc.steps):
                timer.begin_step()
                loss = compute(step)
                timer.end_step()
                startup.mark("first_step")
                done = step + 1
                if faults is not None:
                    faults.apply(rank, done)
                if puller is not None and puller.due(done, tc.steps):
                    puller.run()
                    x_train, y_train = puller.x, puller.y
                    batches = AgentBatches(
                        puller.shard, batch_size=config.data.batch_size, seed=tc.seed, rank=rank
                    )
                acc = None
                if tc.eval_every and done % tc.eval_every == 0 and done < tc.steps:
                    acc = evaluator(done, model, timer).get("accuracy")
                if tc.checkpoint_every and done % tc.checkpoint_every == 0:
                    _save_checkpoint(out, done, model, optimizer, strategy, transport, timer)
                bar.update(
                    done,
                    loss=loss.item(),
                    accuracy=acc,
                    bytes_sent=int(transport.stats.totals("train")["bytes_sent"]),
                )
            strategy.finish()
            evaluator(tc.steps, model, timer)
    finally:
        strategy.close()
        if sink is not None:
            sink.close()
        if security is not None:
            security.close()
    if rank != 0:
        return None
    model_path = save_model(
        out / "model.safetensors",
        evaluator.global_model,
        model_config=job.model_config,
        input_shape=job.input_shape,
        classes=tuple(job.classes or ()),
        dataset=job.name,
        extra={"strategy": config.sync.strategy, "agents": world},
    )
    summary = build_summary(config, job, evaluator, tc.steps, out)
    summary["model_path"] = str(model_path)
    atomic_write_json(out / SUMMARY, summary)
    return summary


def _save_checkpoint(
    out: Path, step: int, model, optimizer, strategy, transport: Transport, timer: AgentTimer
) -> None:
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "strategy": strategy.state_dict(),
        "comm_stats": transport.stats.state_dict(),
        "timer": timer.state_dict(),
        "rng": torch.get_rng_state(),
    }
    path = write_agent_state(out, step=step, rank=transport.rank, state=state)
    hashes = transport.all_gather_object((transport.rank, file_sha256(path)), tag="control")
    if transport.rank == 0:
        commit_checkpoint(out, step=step, world_size=transport.world_size, hashes=dict(hashes))
    # Nobody moves on (and possibly dies) before the checkpoint is committed.
    transport.barrier()
    log.info("checkpoint at step %d", step)


def _interrupt_once() -> None:
    """Let Ctrl-C interrupt this agent once, then ignore it.

    A terminal's Ctrl-C reaches an agent twice: directly (it signals the whole process group)
    and again from the launcher, which forwards the signal to its workers as their death
    signal. The second one can land while the interpreter runs its exit hooks, after the
    launcher has put stderr back on the console, and print a KeyboardInterrupt traceback
    there (seen: torch.library finalizers). Agents are processes of their own (spawned by the
    elastic launcher or torchrun), so ignoring later interrupts only affects this teardown.
    """

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)


def agent_main(
    config_dict: dict[str, Any],
    job_factory: JobFactory | None = None,
    resume: bool = False,
    faults: Any = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Entry point of one agent process (local launcher and torchrun alike)."""
    if startup.ENV not in os.environ:  # torchrun, no ddla launcher: this process's own run
        startup.reset()
    startup.mark("agent_main")
    if (started := startup.process_start()) is not None:
        startup.mark("agent_process", started)
    _interrupt_once()
    config = RunConfig.from_dict(config_dict)
    out = Path(config.out)
    # N agents on one machine share its cores; letting each use them all oversubscribes the
    # CPU and slows every step (torchrun sets OMP_NUM_THREADS=1 for the same reason).
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    transport = Transport.from_env(backend=config.comm.backend, timeout_s=config.comm.timeout_s)
    startup.mark("joined")
    transport.emulate_links(config.comm.link, config.comm.link_overrides, clock=config.comm.clock)
    _setup_logging(out, transport.rank)
    try:
        if job_factory is not None:
            job = job_factory()
        elif config.data.source is not None:
            job = functools.partial(site_job, config)  # built after the security handshake
        else:
            job = job_from_config(config)
        return train(job, config, transport, resume=resume, faults=faults, progress=progress)
    except BaseException as exc:
        log.exception("agent failed")
        if isinstance(exc, (DdlaError, Exception)):
            write_agent_error(out, transport.rank, exc)
        raise
    finally:
        transport.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m ddla.agent``: the agent entry point under torchrun."""
    from ddla.launch import launch

    parser = argparse.ArgumentParser(
        prog="python -m ddla.agent", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", help="YAML/TOML run file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="a.b=c override"
    )
    parser.add_argument("--out", help="run directory")
    parser.add_argument("--resume", help="continue the run in this directory")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out={args.out}")
    try:
        launch(config_file=args.config, overrides=overrides, resume=args.resume)
    except DdlaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.help:
            print(f"help: {exc.help}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
