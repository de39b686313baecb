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

import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddla.aggregate import Aggregator
from ddla.budget import resolve_budget
from ddla.checkpoint import read_agent_state, save_checkpoint
from ddla.comm import Transport
from ddla.comm.agree import agree_on_config, state_sha256
from ddla.comm.elastic import ElasticGroup
from ddla.comm.failures import explain_failure
from ddla.comm.heartbeat import Heartbeat
from ddla.compute import build_compute
from ddla.compute.layout import agents_report, build_layout, check_layout, layout_summary
from ddla.config import RunConfig
from ddla.data import AgentBatches, partition
from ddla.data.cache import take_rows
from ddla.data.preprocess.run import extract_features, prepare
from ddla.data.sharing import parse_share, share_kind
from ddla.data.sources import agree_job
from ddla.errors import CheckpointError, ConfigError, DdlaError
from ddla.faults import summary_entries, survives
from ddla.job import Job, job_from_config, site_job
from ddla.metrics import ConsoleProgress, JsonlSink, startup
from ddla.metrics.evaluator import Evaluator, build_summary
from ddla.metrics.tensorboard import TeeSink, TensorBoardSink
from ddla.metrics.timer import AgentTimer
from ddla.models import save_model
from ddla.models.fusion.agents import save_agent_model
from ddla.optim import LrSchedule, build_optimizer
from ddla.profile.session import ProfileSession, attach_spans
from ddla.runfiles import (
    METRICS,
    RUN_FILE,
    SUMMARY,
    atomic_write_json,
    new_run_id,
    read_run_id,
    trim_metrics,
    write_agent_error,
)
from ddla.security.runtime import secure_join
from ddla.sync import STRATEGIES, build_strategy
from ddla.tasks import check_task_config, resolve_partition

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
    elastic: ElasticGroup | None = None,
) -> dict[str, Any] | None:
    """Train ``job`` as this agent; return the run summary on rank 0 (None elsewhere).

    ``job`` may be a function of the (authenticated) Transport: per-agent sources are agreed
    on after the security handshake, so descriptors only go to authenticated peers.

    With ``elastic`` the run survives lost agents (its Transport replaces ``transport``
    after a change); a restarted agent passes the group :meth:`ElasticGroup.rejoin` made and
    ``transport`` its one-agent base, and starts from the state a live peer sends.
    """
    joining = elastic is not None and elastic.joining is not None
    # Shards and budget are the run's: by the launcher's rank and agent count.
    rank, world = transport.rank, transport.world_size
    if elastic is not None:
        rank, world = elastic.me, elastic.run_world
    out = Path(config.out)
    tc = config.train
    # Authenticate before any model or data flows; with secure aggregation the returned
    # Transport masks every averaged update.
    security = secure_join(config.security, transport, out)
    protection = security.protection if security is not None else None
    startup.mark("secured")
    if not isinstance(job, Job):
        job = job(transport)
    check_task_config(job.task_spec, config)
    from ddla.launch.resume import fixed_settings  # here: ddla.launch imports this module

    ckpt_key = security.checkpoint_key if security is not None else None
    run_id = read_run_id(out) if joining else _shared_run_id(out, transport, resume=resume)
    # This agent's role (replica / pipeline stage / tensor shard); without model.stages or
    # model.tensor_parallel every agent is a replica of the whole model.
    replicas = check_layout(config, world)
    timed = config.model.split.strip() == "time" and not job.is_local  # a batch to time on
    example = job.train[0][: config.data.batch_size] if timed else None  # type: ignore[index]
    layout = build_layout(config.model, job.model, transport, example)
    federated = getattr(STRATEGIES[config.sync.strategy], "federated", False)
    share = parse_share(config.data.share)
    puller = None
    extract_features(job, config)  # Job(preprocess=...): features replace raw inputs from here
    site_test = job.site_test
    if job.is_local:  # each agent's own data: nothing to partition, agree on it first
        if layout.decomposed:  # stages/shards of one replica must see the same batches
            raise ConfigError(
                "per-agent data (data.source) cannot feed model.stages or model.tensor_parallel",
                help="give the decomposed run one dataset (ddla partitions it over replicas)",
            )
        if share or config.data.pull_every:
            raise ConfigError(
                "data.share and data.pull_every need one partitioned dataset, not per-agent data",
                help="unset data.share and data.pull_every",
            )
        if federated:  # its clients are index sets into one dataset that every agent holds
            raise ConfigError(
                f"sync.strategy={config.sync.strategy} partitions one dataset into fed.clients; "
                "a per-agent train set (rank -> data) has none to partition",
                help="pass the whole train set (ddla partitions it), or a non-federated strategy",
            )
        if job.agreement is None:
            site, job.agreement = agree_job(job, transport)
            (x_train, y_train), site_test = site.train, site.site_test
        else:
            x_train, y_train = job.train  # type: ignore[misc]
        shard = np.arange(len(y_train))
        # Every agent's budget from the same figure: the agreed total over all sites.
        train_size = sum(sum(c) for c in job.agreement.counts)
    else:
        x_train, y_train = job.train  # type: ignore[misc]
        train_size = len(y_train)
        spec = resolve_partition(config.data.partition, job.task_spec)
        # A replica's stages and shards see the same batches: partition over replicas.
        # (A restarted agent's base Transport has one agent: its shard is by its run rank.)
        replica = rank if elastic is not None else layout.replica
        shard = partition(spec, job.partition_labels.numpy(), replicas, tc.seed)[replica]
        if share and security is not None:
            x_train, y_train, shard = security.share_pool(
                x_train, y_train, shard, fraction=share, seed=tc.seed,
                kind=share_kind(config.data.share),
            )  # fmt: skip
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
        if not share and puller is None and not federated:
            # Keep this agent's rows only, read from the dataset cache's file when it is one:
            # resident memory grows with the shard, not the dataset. Same samples in the same
            # order (positions into the shard replace global indices), so results are equal.
            # (Shares, pulls and federated clients index the whole set: they keep it.)
            x_train, y_train = take_rows(x_train, shard), y_train[torch.from_numpy(shard)]
            shard = np.arange(len(shard))
    budget = resolve_budget(
        tc,
        dataset=config.data.dataset if not job.is_local else "sources",
        model=job.model_config.name if job.model_config is not None else "custom",
        train_size=train_size,
        agents=replicas,
        batch_size=config.data.batch_size,
    )
    steps = budget.steps
    if callable(site_test):
        site_test = site_test(rank)
    prep = prepare(
        job, config, transport, x_train=x_train, shard=shard, site_test=site_test,
        layout=layout, protection=protection,
    )  # fmt: skip
    if prep is not None:  # data.preprocess: one transform fitted on all shards, applied here
        x_train, site_test, layout = prep.x_train, prep.site_test, prep.layout
    batches = AgentBatches(
        shard, batch_size=config.data.batch_size, seed=tc.seed, rank=layout.replica
    )
    startup.mark("data")
    log.info(
        "shard of %d samples, %d agents, strategy %s, budget %s",
        len(shard),
        world,
        config.sync.strategy,
        budget.describe(),
    )

    model = layout.module
    state = (
        read_agent_state(out, rank=rank, run_id=run_id, key=ckpt_key, world_size=world)
        if resume
        else None
    )
    default_opt = STRATEGIES[config.sync.strategy].default_optimizer
    optimizer = (
        job.optimizer(model.parameters())
        if job.optimizer is not None
        else build_optimizer(config.optim, model.parameters(), default=default_opt)
    )
    # The schedule's base rates are read before a checkpoint's (scheduled) rates are loaded.
    schedule = (
        LrSchedule(optimizer, config.optim.schedule, steps) if job.optimizer is None else None
    )
    strategy = build_strategy(
        config.sync,
        transport=layout.sync,
        model=model,
        optimizer=optimizer,
        protection=protection,
        server_lr=config.fed.server_lr,
    )
    if elastic is not None:
        elastic.attach(strategy)
        if joining:  # the current model, optimizer, strategy state and step of a live peer
            state = elastic.pull()
    start = 0
    if state is not None:
        # Loaded after the strategy is built: building it may synchronize the fresh model
        # (the periodic strategies broadcast rank 0's initial parameters), and a resumed agent
        # continues from its own, not yet synchronized, parameters.
        layout.check_resumed(state["model"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        strategy.load_state_dict(state["strategy"])
        if not joining:  # a peer's counters, timer and random state are not this agent's
            transport.stats.load_state_dict(state["comm_stats"])
            torch.set_rng_state(state["rng"])
        start = int(state["step"])
        log.info("%s at step %d", "rejoined" if joining else "resumed", start)
    timer = AgentTimer(transport, state.get("timer") if state else None)
    if puller is not None and start:  # resumed: redo earlier pulls so the data is the same
        puller.replay(start, steps)
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
    evaluator = Evaluator(
        job,
        config,
        Aggregator(transport) if layout.decomposed else strategy.aggregator,
        sink,
        site_test=site_test,
    )
    strategy.train_model.train()

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(batches.batch(step))  # batches and data grow with pulls
        return x_train[idx], y_train[idx]

    compute = build_compute(
        config,
        strategy=strategy,
        optimizer=optimizer,
        loss=job.loss,
        batch=batch,
        train=(x_train, y_train),
        layout=layout,
    )

    def guarded(fn: Callable[[], Any], step: int) -> Any:  # redone among survivors on a loss
        return fn() if elastic is None else elastic.call(fn, step=step)

    bar = ConsoleProgress(
        total=steps,
        description=f"{config.sync.strategy} x{world}",
        enabled=progress and rank == 0,
    )
    run_wide = lambda: elastic.transport if elastic is not None else transport  # noqa: E731
    profile = (
        ProfileSession(config.profile, transport, out=out, total_steps=steps, run_wide=run_wide,
                       strategy=config.sync.strategy)
        if config.profile.enabled else None
    )  # fmt: skip
    startup.mark("ready")
    try:
        with bar:
            bar.update(start)
            for step in range(start, steps):
                if profile is not None:  # opens the window, outside the step's timing
                    profile.begin(step)
                timer.begin_step()
                if schedule is not None:
                    schedule.apply(step)
                loss = compute(step) if profile is None else profile.step(step, compute)
                timer.end_step()
                if profile is not None:  # closes and exports it, outside the timing
                    profile.end(step)
                startup.mark("first_step")
                done = step + 1
                if faults is not None:
                    faults.apply(rank, done)
                if puller is not None and puller.due(done, steps):
                    puller.run()
                    x_train, y_train = puller.x, puller.y
                    batches = AgentBatches(
                        puller.shard, batch_size=config.data.batch_size, seed=tc.seed, rank=rank
                    )
                acc = None
                if tc.eval_every and done % tc.eval_every == 0 and done < steps:
                    acc = guarded(
                        lambda d=done: evaluator(d, layout.eval_model(model), timer), done
                    ).get("accuracy")
                if tc.checkpoint_every and done % tc.checkpoint_every == 0:
                    run_wide = elastic.transport if elastic is not None else transport
                    parts = (model, optimizer, strategy, run_wide, timer)
                    guarded(
                        lambda d=done, parts=parts: save_checkpoint(
                            out, d, parts, run_id=run_id, fixed=fixed_settings(config),
                            key=ckpt_key,
                        ),
                        done,
                    )  # fmt: skip
                bar.update(
                    done,
                    loss=loss.item(),
                    accuracy=acc,
                    bytes_sent=int(transport.stats.totals("train")["bytes_sent"]),
                )
            strategy.finish()
            guarded(lambda: evaluator(steps, layout.eval_model(model), timer, final=True), steps)
            startup.mark("final_eval")
            report = None if joining else agents_report(layout, compute.agent_stats(), optimizer)
            # The same line on every machine: compare them to check all agents ended alike.
            log.info("final model sha256 %s", state_sha256(evaluator.merged_state))
    finally:
        if profile is not None:
            profile.close()
        strategy.close()
        if sink is not None:
            sink.close()
        if security is not None:
            security.close()
    transform = prep.transform if prep is not None else None
    if tc.keep_agent_models:  # this agent's own final model, for ddla merge
        save_agent_model(out, rank, model, job, transform=transform, samples=len(shard))
    # The reporting agent: rank 0 of the run, or of the last membership after a change.
    if (elastic.transport.rank if elastic is not None else rank) != 0:
        return None
    model_path = save_model(
        out / "model.safetensors",
        evaluator.global_model,
        model_config=job.model_config,
        input_shape=job.input_shape,
        classes=tuple(job.classes or ()),
        dataset=job.name,
        extra={
            "strategy": config.sync.strategy,
            "agents": world,
            "task": job.task,
            "samples": train_size,
        },
        preprocess=transform,
    )
    summary = build_summary(config, job, evaluator, steps, out, replicas=replicas)
    summary["model_path"] = str(model_path)
    summary["budget"] = budget.as_dict()
    summary["run_id"] = run_id
    summary.update(compute.summary())
    summary.update(summary_entries(elastic))
    if report is not None:
        summary["decomposition"] = layout_summary(layout, config, report)
    atomic_write_json(out / SUMMARY, summary)
    return summary


def _shared_run_id(out: Path, transport: Transport, *, resume: bool) -> str:
    """The run id in ``run.json`` (written by the launcher), as rank 0 reads it, on every agent.

    A fresh run started without the launcher (``train`` called directly) gets a new one.
    """
    mine = read_run_id(out) if transport.rank == 0 else None
    if mine is None and transport.rank == 0 and not resume:
        mine = new_run_id()
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / RUN_FILE, {"run_id": mine})
    if transport.world_size > 1:
        mine = transport.all_gather_object(mine, tag="control")[0]
    if mine is None:
        raise CheckpointError(
            f"{out} has no run id (run.json is missing)",
            help="start agents through ddla run / ddla.launch, which write it",
        )
    return mine


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

    # Ray Train and Dask run the agent in a worker thread, where Python forbids installing
    # signal handlers; those engines stop their workers themselves.
    if threading.current_thread() is threading.main_thread():
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
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0:
        # Restarted by the launcher (fault.max_restarts): from the last committed checkpoint,
        # without the faults that ended the first attempt.
        from ddla.checkpoint import has_checkpoint

        resume, faults = has_checkpoint(out), None
    elif faults is None:
        faults = config.fault.injector()  # --set fault.kill=RANK@STEP
    # N agents on one machine share its cores; letting each use them all oversubscribes the
    # CPU and slows every step (torchrun sets OMP_NUM_THREADS=1 for the same reason).
    # An explicit OMP_NUM_THREADS wins: on a loaded shared machine two intra-op threads for
    # one agent were measured 20-40x slower per step than one (the threads wait on each other).
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(
        int(threads)
        if threads.isdigit() and int(threads) > 0
        else max(1, (os.cpu_count() or 1) // local_world)
    )
    try:
        transport = Transport.from_env(backend=config.comm.backend, timeout_s=config.comm.timeout_s)
    except DdlaError as exc:  # a peer that never joined: record it, the launcher reports it
        write_agent_error(out, int(os.environ.get("RANK", "0")), exc)
        raise
    startup.mark("joined")
    transport.emulate_links(config.comm.link, config.comm.link_overrides, clock=config.comm.clock)
    attach_spans(config.profile, transport)  # before any subgroup: they share its spans
    _setup_logging(out, transport.rank)
    heartbeat = Heartbeat(transport.store, rank=transport.rank, world_size=transport.world_size)
    heartbeat.start()
    try:
        agree_on_config(
            transport.store, rank=transport.rank, world_size=transport.world_size,
            config=config.to_dict(),
        )  # fmt: skip
        if job_factory is not None:
            job = job_factory()
        elif config.data.source is not None:
            job = functools.partial(site_job, config)  # built after the security handshake
        else:
            job = job_from_config(config)
        startup.mark("job")
        elastic = (
            ElasticGroup(transport, store=transport.store, run_world=transport.world_size,
                         heartbeat=heartbeat)
            if survives(config) and transport.world_size > 1
            else None
        )  # fmt: skip
        if elastic is not None:
            elastic.rejoin_wait_s = config.fault.rejoin_wait_s
        return train(
            job, config, transport, resume=resume, faults=faults, progress=progress,
            elastic=elastic,
        )  # fmt: skip
    except BaseException as exc:
        log.exception("agent failed")
        if isinstance(exc, (DdlaError, Exception)):
            reported = explain_failure(
                exc, heartbeat.silent_peers, world_size=transport.world_size,
                timeout_s=config.comm.timeout_s,
            )  # fmt: skip
            write_agent_error(out, transport.rank, reported)
            if reported is not exc:
                raise reported from exc
        raise
    finally:
        heartbeat.stop()
        transport.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m ddla.agent [OPTIONS]``: the agent entry point under torchrun.

    It is ``ddla run`` itself (same options, same ``error:``/``help:`` lines and exit codes):
    the one CLI front end lives in :mod:`ddla.cli`; under torchrun ``launch`` runs this
    process as one agent.
    """
    import typer

    from ddla.cli import app

    command = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    try:
        command.main(args=sys.argv[1:] if argv is None else argv, prog_name="python -m ddla.agent")
    except SystemExit as exc:  # click's standalone mode exits with the command's code
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
