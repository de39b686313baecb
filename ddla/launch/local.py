"""The local launcher: N agent processes on this machine through PyTorch's elastic launcher.

The same machinery as ``torchrun`` (a c10d rendezvous on loopback, spawned workers); rank 0
owns the console and the others log to ``OUT/logs/elastic``. A failed agent becomes one
DdlaError, re-raised from what the agents recorded under ``OUT``.
"""

from __future__ import annotations

import logging
import signal
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddla.config import RunConfig
from ddla.errors import AgentFailedError, CommError, DdlaError
from ddla.runfiles import read_agent_errors

if TYPE_CHECKING:
    from ddla.agent import JobFactory

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


def run_local(
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

    from ddla import warm
    from ddla.agent import agent_main
    from ddla.faults import survives
    from ddla.testing import free_port

    if survives(cfg):  # the survivors must outlive a lost agent: not torchelastic's model
        from ddla.launch.supervise import run_supervised

        return run_supervised(cfg, out, job_factory, resume, faults, progress)

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
        # A failed agent restarts every agent from the last checkpoint (agent_main resumes).
        max_restarts=cfg.fault.max_restarts,
        monitor_interval=0.1,
        start_method=(method := warm.start_method()),
        local_addr="127.0.0.1",
        # Rank 0's stdout owns the console (progress bar); everything else goes to files
        # under logs/elastic so a failure prints one clean line, not N tracebacks.
        logs_specs=DefaultLogsSpecs(
            log_dir=str(out / "logs" / "elastic"),
            redirects={0: Std.ERR, **{r: Std.ALL for r in range(1, n)}},
        ),
    )
    try:
        context = warm.LauncherContext.capture() if method == "forkserver" else None
        elastic_launch(launch_config, warm.call)(
            context, agent_main, cfg.to_dict(), job_factory, resume, faults, progress
        )
    except ChildFailedError as exc:
        raise _agent_failure(out, exc) from None
    except SignalException as exc:
        raise AgentFailedError(
            f"interrupted by signal {exc.sigval.name}; all agents stopped",
            help=interrupt_help(cfg, out),
        ) from None


def interrupt_help(cfg: RunConfig, out: Path) -> str:
    """What an interrupted run can do next: resume only when a checkpoint was committed."""
    from ddla.checkpoint import has_checkpoint

    if has_checkpoint(out):
        return f"continue with: ddla run --resume {out}"
    if cfg.train.checkpoint_every:
        return (
            f"nothing to resume: no checkpoint was written before the interrupt (the first "
            f"is at step {cfg.train.checkpoint_every}); run again"
        )
    return "nothing to resume (train.checkpoint_every is 0); set it to be able to resume"


def _is_comm(type_name: str) -> bool:
    """An error type an agent records when a peer is gone (not a root cause of its own)."""
    cls = _error_types().get(type_name)
    return (cls is not None and issubclass(cls, CommError)) or type_name in (
        "RuntimeError",  # gloo's own "Connection closed by peer" and friends
        "DistBackendError",
        "DistNetworkError",
    )


def _agent_failure(out: Path, exc: Exception) -> DdlaError:
    """The root-cause error of a failed run, as the agents recorded it."""
    records = read_agent_errors(out)
    failures = getattr(exc, "failures", {})
    # An agent that died without a word (crash, OOM kill, kill -9) is the root cause of the
    # connection errors its peers then record: name it, with its exit code, first.
    silent = sorted(
        (rank, f.exitcode)
        for rank, f in failures.items()
        if rank not in {r["rank"] for r in records} and f.exitcode not in (0, -signal.SIGTERM)
    )
    if silent and all(_is_comm(r["type"]) for r in records):
        dead = ", ".join(f"agent {rank} died (exit code {code})" for rank, code in silent)
        seen = (
            f"; agent {records[0]['rank']} then failed: {records[0]['message']}" if records else ""
        )
        return AgentFailedError(
            (dead + seen)[:400], help=f"see {out}/logs/agent{silent[0][0]}.log and {out}/logs/"
        )
    if records:
        first = records[0]
        cls = _error_types().get(first["type"], AgentFailedError)
        prefix = "" if cls is not AgentFailedError else f"agent {first['rank']}: {first['type']}: "
        return cls(prefix + first["message"], help=first.get("help") or f"see {out}/logs/")
    ranks = ", ".join(str(r) for r in sorted(failures)) or "?"
    codes = {f.exitcode for f in failures.values()}
    return AgentFailedError(
        f"agent(s) {ranks} died (exit code {', '.join(map(str, sorted(codes)))})",
        help=f"see the per-agent logs in {out}/logs/",
    )
