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

from ddla.checkpoint import verify_checkpoint
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.launch.engines import runner, with_engine
from ddla.runfiles import CONFIG, prepare_run_dir, read_summary

if TYPE_CHECKING:  # importing ddla.agent here would break `python -m ddla.agent` (runpy)
    from ddla.agent import JobFactory

log = logging.getLogger("ddla.launch")


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


def _preflight(config: RunConfig) -> None:
    """Load the data and split it once here so data errors surface before agents start."""
    from ddla.data import partition
    from ddla.job import job_from_config
    from ddla.tasks import check_task_config, resolve_partition

    job = job_from_config(config)
    check_task_config(job.task_spec, config)
    spec = resolve_partition(config.data.partition, job.task_spec)
    partition(spec, job.partition_labels.numpy(), config.agents, config.train.seed)


def launch(
    job_factory: JobFactory | None = None,
    *,
    config: RunConfig | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    resume: str | Path | None = None,
    faults: Any = None,
    progress: bool = True,
    launcher: str | None = None,
) -> dict[str, Any]:
    """Run agents to completion and return the run summary (``summary.json``).

    ``job_factory`` is a top-level function returning a :class:`ddla.Job` (your model and
    data); without it the job comes from the config (a zoo model on a built-in dataset).
    Under torchrun this process is one agent, and non-zero ranks return ``{}``.
    ``launcher`` (``local``, ``ray``, ``spark``, ``dask``) sets ``launch.engine``: the engine
    that starts the agents (:mod:`ddla.launch.engines`).
    """
    if launcher is not None and config is None:  # first, so launch.* overrides validate
        overrides = [f"launch.engine={launcher}", *(overrides or [])]
    cfg = with_engine(resolve_config(config, config_file, overrides, resume), launcher)
    out = Path(cfg.out)
    if under_torchrun():
        from ddla.agent import agent_main

        rank = int(os.environ["RANK"])
        prepare_run_dir(out, fresh=resume is None and rank == 0)
        if rank == 0:
            (out / CONFIG).write_text(cfg.to_yaml())
        result = agent_main(cfg.to_dict(), job_factory, resume is not None, faults, progress)
        if result:
            write_run_report(out)
        return result or {}
    prepare_run_dir(out, fresh=resume is None)
    if resume is not None:
        verify_checkpoint(out, world_size=cfg.agents)
    if job_factory is None:
        _preflight(cfg)
    (out / CONFIG).write_text(cfg.to_yaml())
    runner(cfg.launch.engine)(cfg, out, job_factory, resume is not None, faults, progress)
    summary = read_summary(out)
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
