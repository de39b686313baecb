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
import uuid
from pathlib import Path
from typing import Any

from ddla.agent import JobFactory, agent_main
from ddla.checkpoint import verify_checkpoint
from ddla.config import RunConfig
from ddla.errors import AgentFailedError, ConfigError, DdlaError
from ddla.runfiles import CONFIG, prepare_run_dir, read_agent_errors, read_summary

log = logging.getLogger("ddla.launch")

_ERRORS: dict[str, type[DdlaError]] = {}


def _error_types() -> dict[str, type[DdlaError]]:
    """Every DdlaError subclass by name, to re-raise an agent's error in the launcher."""
    if not _ERRORS:
        stack: list[type[DdlaError]] = [DdlaError]
        while stack:
            cls = stack.pop()
            _ERRORS[cls.__name__] = cls
            stack.extend(cls.__subclasses__())
    return _ERRORS


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
) -> dict[str, Any]:
    """Run agents to completion and return the run summary (``summary.json``).

    ``job_factory`` is a top-level function returning a :class:`ddla.Job` (your model and
    data); without it the job comes from the config (a zoo model on a built-in dataset).
    Under torchrun this process is one agent, and non-zero ranks return ``{}``.
    """
    cfg = resolve_config(config, config_file, overrides, resume)
    out = Path(cfg.out)
    if under_torchrun():
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
    _run_local(cfg, out, job_factory, resume is not None, faults, progress)
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


def _run_local(
    cfg: RunConfig,
    out: Path,
    job_factory: JobFactory | None,
    resume: bool,
    faults: Any,
    progress: bool,
) -> None:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from ddla.testing import free_port

    # The elastic agent logs every lifecycle event at INFO; our own progress bar is enough.
    # Agent failures are reported by us in one line; the agent's traceback is in its log.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    n = cfg.agents
    launch_config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=n,
        run_id=f"ddla-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{free_port()}",
        rdzv_configs={"timeout": int(cfg.comm.timeout_s)},
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
        local_addr="127.0.0.1",
        # Rank 0's stdout owns the console (progress bar); everything else goes to files
        # under logs/elastic so a failure prints one clean line, not N tracebacks.
        logs_specs=DefaultLogsSpecs(
            log_dir=str(out / "logs" / "elastic"),
            redirects={0: Std.ERR, **{r: Std.ALL for r in range(1, n)}},
        ),
    )
    try:
        elastic_launch(launch_config, agent_main)(
            cfg.to_dict(), job_factory, resume, faults, progress
        )
    except ChildFailedError as exc:
        raise _agent_failure(out, exc) from None
    except SignalException as exc:
        raise AgentFailedError(
            f"interrupted by signal {exc.sigval.name}; all agents stopped",
            help=f"continue with: ddla run --resume {out}"
            if cfg.train.checkpoint_every
            else "set train.checkpoint_every to be able to resume",
        ) from None


def _agent_failure(out: Path, exc: Exception) -> DdlaError:
    """The root-cause error of a failed run, as the agents recorded it."""
    records = read_agent_errors(out)
    if records:
        first = records[0]
        cls = _error_types().get(first["type"], AgentFailedError)
        prefix = "" if cls is not AgentFailedError else f"agent {first['rank']}: {first['type']}: "
        return cls(prefix + first["message"], help=first.get("help") or f"see {out}/logs/")
    failures = getattr(exc, "failures", {})
    ranks = ", ".join(str(r) for r in sorted(failures)) or "?"
    codes = {f.exitcode for f in failures.values()}
    return AgentFailedError(
        f"agent(s) {ranks} died (exit code {', '.join(map(str, sorted(codes)))})",
        help=f"see the per-agent logs in {out}/logs/",
    )
