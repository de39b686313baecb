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
from typing import Any

from ddla.agent import JobFactory, agent_main
from ddla.checkpoint import verify_checkpoint
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.launch.local import run_local
from ddla.runfiles import CONFIG, prepare_run_dir, read_summary

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
    """Load the data and split it once here so data errors surface before agents start.

    Built-in datasets are decoded into the memory-mapped cache here (:mod:`ddla.data.cache`),
    so the agents map it instead of decoding it again each. With ``data.source`` each agent
    reads its own file: only that every file exists is checked here (the agents validate
    their own data and agree on it).
    """
    from ddla.data import partition
    from ddla.job import job_from_config

    if config.data.source is not None:
        from ddla.data.sources import site_path
        from ddla.errors import DataError

        for rank in range(config.agents):
            path = site_path(config.data.source, rank=rank, world=config.agents, node=0)
            if not path.is_file():
                raise DataError(
                    f"agent {rank}: data.source file {path} does not exist",
                    help="each agent needs its own file; check data.source and its {rank}",
                )
        return

    job = job_from_config(config)
    partition(config.data.partition, job.train[1].numpy(), config.agents, config.train.seed)


def launch(
    job_factory: JobFactory | None = None,
    *,
    config: RunConfig | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    resume: str | Path | None = None,
    faults: Any = None,
    progress: bool = True,
    report: bool = True,
) -> dict[str, Any]:
    """Run agents to completion and return the run summary (``summary.json``).

    ``report=False`` skips the plots and ``report.html`` (``ddla run --no-report``, sweeps;
    ``ddla report RUN_DIR`` draws them later); the CLI prints the result first, then draws.

    ``job_factory`` is a top-level function returning a :class:`ddla.Job` (your model and
    data); without it the job comes from the config (a zoo model on a built-in dataset).
    Under torchrun this process is one agent, and non-zero ranks return ``{}``.
    """
    from ddla.metrics import startup

    startup.reset()
    startup.mark("launch")
    cfg = resolve_config(config, config_file, overrides, resume)
    out = Path(cfg.out)
    if under_torchrun():
        rank = int(os.environ["RANK"])
        prepare_run_dir(out, fresh=resume is None and rank == 0)
        if rank == 0:
            (out / CONFIG).write_text(cfg.to_yaml())
        result = agent_main(cfg.to_dict(), job_factory, resume is not None, faults, progress)
        if result and report:
            write_run_report(out)
        return result or {}
    prepare_run_dir(out, fresh=resume is None)
    if resume is not None:
        verify_checkpoint(out, world_size=cfg.agents)
    if job_factory is None:
        _preflight(cfg)
    (out / CONFIG).write_text(cfg.to_yaml())
    startup.launcher_env()
    run_local(cfg, out, job_factory, resume is not None, faults, progress)
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
