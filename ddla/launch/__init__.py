"""Start agents: N local processes through PyTorch's elastic launcher, or join under torchrun.

One code path: :func:`launch` either starts ``config.agents`` local agent processes (the
machinery behind ``torchrun``, with a c10d rendezvous on loopback) or, when this process was
itself started by torchrun, runs the agent in-process. Bad input is caught here, before any
process starts, so the user gets one clear line instead of N tracebacks.

Example (Python API):

    import ddla
    summary = ddla.launch(overrides=["agents=2", "data.dataset=digits", "train.steps=50"])
    print(summary["final"]["accuracy"])
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddla.config import RunConfig
from ddla.errors import CheckpointError, ConfigError
from ddla.launch.engines import runner, with_engine
from ddla.runfiles import (
    CONFIG,
    RUN_FILE,
    clear_agent_errors,
    plan_fresh_out,
    read_run_id,
    read_summary,
    start_fresh_run,
)

if TYPE_CHECKING:  # importing ddla.agent here would break `python -m ddla.agent` (runpy)
    from ddla.agent import JobFactory

log = logging.getLogger("ddla.launch")

#: The default ``--out``: a scratch directory, whose previous run is moved aside, not refused.
DEFAULT_OUT: str = RunConfig.__dataclass_fields__["out"].default


def under_torchrun() -> bool:
    """True when this process is an agent started by torchrun (or another elastic agent)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "RANK" in os.environ


def resolve_config(
    config: RunConfig | None,
    config_file: str | Path | None,
    overrides: list[str] | None,
    resume: str | Path | None,
) -> RunConfig:
    """The run's config: a resumed run's own config.yaml, a file, or defaults; plus overrides."""
    if config is not None and (config_file or overrides):
        raise ConfigError("pass either a RunConfig or a config file/overrides, not both")
    if resume is not None:
        run_file = Path(resume) / CONFIG
        if not run_file.is_file():
            raise ConfigError(
                f"--resume {resume}: not a ddla run directory ({CONFIG} missing)",
                help="pass the --out directory of an earlier run",
            )
        return RunConfig.load(run_file, [*(overrides or []), f"out={resume}"])
    if config is not None:
        return config
    return RunConfig.load(config_file, overrides)


def preflight(config: RunConfig) -> None:
    """Load the data, split it and check the model fits it, so errors surface before agents.

    Also loads the run secret when security is on: a missing, malformed or group/world-readable
    secret file is refused here in one line rather than by every agent.

    Built-in datasets are decoded into the memory-mapped cache here (:mod:`ddla.data.cache`),
    so the agents map it instead of decoding it again each. With ``data.source`` each agent
    reads its own file: only that every file exists is checked here (under torchrun, rank 0's
    own: the others may live on other machines); the agents validate their own data and
    agree on it.
    """
    import warnings

    from ddla.data import partition
    from ddla.job import job_from_config
    from ddla.tasks import check_task_config, resolve_partition

    load_run_secret(config)
    if config.data.source is not None:
        from ddla.data.sources import site_path
        from ddla.errors import DataError

        # Under torchrun the other agents may be on other machines, holding files this one
        # cannot see: check this agent's own file only (the agreement checks the rest).
        ranks = [int(os.environ["RANK"])] if under_torchrun() else range(config.agents)
        for rank in ranks:
            here = {} if under_torchrun() else {"node": 0, "local_rank": rank}
            path = site_path(config.data.source, rank=rank, world=config.agents, **here)
            if not path.is_file():
                raise DataError(
                    f"agent {rank}: data.source file {path} does not exist",
                    help="each agent needs its own file; check data.source and its {rank}",
                )
        return

    with warnings.catch_warnings():
        # A model too big for its inputs warns at construction (zero-element layers) before
        # the forward pass fails; the one DataError below says it all.
        warnings.simplefilter("ignore", UserWarning)
        job = job_from_config(config)
    check_task_config(job.task_spec, config)
    check_model_input(job)
    spec = resolve_partition(config.data.partition, job.task_spec)
    partition(spec, job.partition_labels.numpy(), config.agents, config.train.seed)


def check_model_input(job: Any) -> None:
    """Run the model once on two training samples: a shape mismatch becomes one DataError."""
    import warnings

    import torch

    from ddla.errors import DataError

    x = job.train[0][:2]
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            job.model(x)
    except (RuntimeError, ValueError, IndexError) as exc:
        name = job.model_config.name if job.model_config is not None else "the model"
        raise DataError(
            f"model {name} cannot take {job.name}'s inputs of shape {tuple(x.shape[1:])}: "
            f"{str(exc).splitlines()[0]}",
            help="the cnn needs [length] or [channels, length] vectors, or [channels, height, "
            "width] images of at least 4x4; use --model mlp for other shapes",
        ) from None


def load_run_secret(config: RunConfig) -> bytes | None:
    """The run secret when security is on (refusing bad ones in one line), else None."""
    if not config.security.enabled:
        return None
    from ddla.security.secret import load_secret

    return load_secret(config.security.secret_file)


def _resume_checkpoint(cfg: RunConfig, out: Path) -> None:
    """Check the checkpoint of ``out`` belongs to this run and fits ``cfg``; say any fallback."""
    import sys

    from ddla.checkpoint import checkpoint_key, find_checkpoint
    from ddla.launch.resume import check_resume

    secret = load_run_secret(cfg)
    run_id = read_run_id(out)
    found = find_checkpoint(
        out,
        run_id=run_id,
        key=checkpoint_key(secret) if secret is not None else None,
        world_size=cfg.agents,
    )
    if run_id is None or found.manifest.get("run_id") is None:
        raise CheckpointError(
            f"--resume {out}: the checkpoint cannot be tied to this run directory "
            f"({RUN_FILE} or the checkpoint's run id is missing)",
            help="it was written by an older ddla, or copied in; start a fresh run",
        )
    check_resume(cfg, found, out)
    if found.fallback:
        log.warning("%s", found.fallback)
        print(f"warning: {found.fallback}", file=sys.stderr)


def launch(
    job_factory: JobFactory | None = None,
    *,
    config: RunConfig | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    resume: str | Path | None = None,
    force: bool = False,
    faults: Any = None,
    progress: bool = True,
    report: bool = True,
    launcher: str | None = None,
) -> dict[str, Any]:
    """Run agents to completion and return the run summary (``summary.json``).

    ``report=False`` skips the plots and ``report.html`` (``ddla run --no-report``, sweeps;
    ``ddla report RUN_DIR`` draws them later); the CLI prints the result first, then draws.

    ``job_factory`` is a top-level function returning a :class:`ddla.Job` (your model and
    data); without it the job comes from the config (a zoo model on a built-in dataset).
    Under torchrun this process is one agent, and non-zero ranks return ``{}``.
    ``launcher`` (``local``, ``ray``, ``spark``, ``dask``) sets ``launch.engine``: the engine
    that starts the agents (:mod:`ddla.launch.engines`).

    A fresh run refuses an ``out`` holding a finished or resumable run, or other files, unless
    ``force`` (the old contents are moved aside, never deleted); nothing in ``out`` changes
    before the config, the data and the checkpoint (on resume) are known to be good.
    """
    from ddla.metrics import startup

    startup.reset()
    startup.mark("launch")
    if launcher is not None and config is None:  # first, so launch.* overrides validate
        overrides = [f"launch.engine={launcher}", *(overrides or [])]
    cfg = with_engine(resolve_config(config, config_file, overrides, resume), launcher)
    out = Path(cfg.out)
    scratch = cfg.out == DEFAULT_OUT
    if under_torchrun():
        from ddla.agent import agent_main

        rank = int(os.environ["RANK"])
        if rank == 0:
            if resume is None:
                plan = plan_fresh_out(out, force=force, scratch=scratch)
                if job_factory is None:
                    preflight(cfg)
                start_fresh_run(plan, cfg.to_yaml())
            else:
                _resume_checkpoint(cfg, out)
                clear_agent_errors(out)
                (out / CONFIG).write_text(cfg.to_yaml())
        # Other ranks write nothing before the rendezvous: on a shared filesystem rank 0 may
        # not have claimed --out yet (the agent creates its logs after joining).
        result = agent_main(cfg.to_dict(), job_factory, resume is not None, faults, progress)
        if result and report:
            write_run_report(out)
        return result or {}
    from ddla import warm
    from ddla.faults import survives

    if cfg.launch.engine == "local" and not survives(cfg):
        warm.start()  # the agents' imports run there while the preflight runs here
    else:  # another engine, or the fault-tolerant supervisor, starts its own agents
        warm.stop()
    if resume is None:
        plan = plan_fresh_out(out, force=force, scratch=scratch)
        if job_factory is None:
            preflight(cfg)
        else:
            load_run_secret(cfg)
        start_fresh_run(plan, cfg.to_yaml())
    else:
        _resume_checkpoint(cfg, out)
        if job_factory is None:
            preflight(cfg)
        clear_agent_errors(out)
        (out / CONFIG).write_text(cfg.to_yaml())
    startup.launcher_env()
    runner(cfg.launch.engine)(cfg, out, job_factory, resume is not None, faults, progress)
    summary = read_summary(out)
    if report:  # after summary.json and the model are on disk: a slow report loses nothing
        write_run_report(out)
    return summary


def write_run_report(out: Path) -> Path | None:
    """Plots and ``report.html`` of a finished run; a failure here warns, never loses the run."""
    import sys

    from ddla.report import write_report

    try:
        return write_report(out)
    except Exception as exc:  # the run itself succeeded: keep its results, say what went wrong
        log.warning("no report for %s: %s", out, exc)
        print(f"warning: could not write the report of {out}: {exc}", file=sys.stderr)
        return None
