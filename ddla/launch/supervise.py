"""The local launcher of a run that survives lost agents: survivors go on, the dead restart.

PyTorch's elastic agent (``local.py``) ends or restarts *every* worker when one fails, which
is torchelastic's model and the right one for ``allreduce``. A periodic strategy can do better
(:mod:`ddla.comm.elastic`): the others carry on, so this launcher keeps them running. It hosts
the run's c10d Store itself (as the elastic agent does, ``TORCHELASTIC_USE_AGENT_STORE``), so
no agent's death takes the Store with it, starts the N agents with the env:// variables,
and when one exits with an error while ``fault.max_restarts`` allows, starts it again with
``DDLA_REJOIN=1``: it asks the live agents to admit it and pulls the current state from one.

Rank 0's stdout goes to the console; its stderr and the others' (and restarted agents')
output to ``OUT/logs/agents/agentN.out``. The run succeeded when the last membership's rank 0 wrote
``summary.json`` (agents still running 15 s later are stopped).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddla.config import RunConfig
from ddla.errors import AgentFailedError
from ddla.runfiles import SUMMARY

if TYPE_CHECKING:
    from ddla.agent import JobFactory

REJOIN_ENV = "DDLA_REJOIN"
#: Seconds the agents get to exit after the summary is written, before they are stopped.
_FINISH_GRACE_S = 15.0


def _child(
    rank: int, env: dict[str, str], log: str, console: bool, parent: int, args: tuple[Any, ...]
) -> None:
    from ddla.testing import _die_with_parent

    _die_with_parent(parent)  # a launcher that is killed takes its agents with it
    os.environ.update(env)
    # As with the elastic launcher: the console's agent keeps stdout (progress, fault lines)
    # and sends stderr to its log; every other agent sends both there.
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if not console:
        os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        if env.get(REJOIN_ENV) == "1":
            rejoin_main(*args)
        else:
            from ddla.agent import agent_main

            agent_main(*args)
    except BaseException:
        sys.exit(1)  # the agent recorded its error under OUT; the launcher reports it


def rejoin_main(
    config_dict: dict[str, Any], job_factory: JobFactory | None, *_: Any
) -> dict[str, Any] | None:
    """A restarted agent: the run's Store, admission at the others' next sync, state pull."""
    import torch.distributed as dist

    from ddla.agent import _setup_logging, train
    from ddla.comm import Transport
    from ddla.comm.elastic import ElasticGroup
    from ddla.comm.heartbeat import Heartbeat
    from ddla.job import job_from_config
    from ddla.runfiles import write_agent_error

    config = RunConfig.from_dict(config_dict)
    out = Path(config.out)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    _setup_logging(out, rank)
    limit = timedelta(seconds=config.comm.timeout_s)
    root = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), None, False, limit
    )
    store = dist.PrefixStore("ddla/", root)  # ddla's control prefix (ddla/comm/join.py)
    heartbeat = Heartbeat(store, rank=rank, world_size=world).start()
    base = Transport.single(timeout_s=config.comm.timeout_s)
    try:
        job = job_factory() if job_factory is not None else job_from_config(config)
        elastic = ElasticGroup.rejoin(
            store, rank=rank, run_world=world, wait_s=config.fault.rejoin_timeout_s,
            base=base, heartbeat=heartbeat,
        )  # fmt: skip
        elastic.rejoin_wait_s = config.fault.rejoin_wait_s
        return train(job, config, base, progress=False, elastic=elastic)
    except Exception as exc:
        write_agent_error(out, rank, exc)
        raise
    finally:
        heartbeat.stop()


def run_supervised(
    cfg: RunConfig,
    out: Path,
    job_factory: JobFactory | None,
    resume: bool,
    faults: Any,
    progress: bool,
) -> None:
    """Run ``cfg.agents`` agents; restart a lost one up to ``fault.max_restarts`` times."""
    import torch.distributed as dist

    from ddla.comm.elastic import RESTARTING_KEY, STARTED_KEY
    from ddla.launch.local import _agent_failure, interrupt_help

    n = cfg.agents
    timeout = timedelta(seconds=cfg.comm.timeout_s)
    # The launcher hosts the Store (the last one: a restart before training begins gets a
    # fresh one), so no agent's death takes it along.
    stores = [dist.TCPStore("127.0.0.1", 0, None, True, timeout, wait_for_workers=False)]
    logs = out / "logs" / "agents"
    logs.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")

    def control() -> Any:  # the agents' view of the Store: ddla's prefix (ddla/comm/join.py)
        return dist.PrefixStore("ddla/", stores[-1])

    base = {
        "MASTER_ADDR": "127.0.0.1", "WORLD_SIZE": str(n), "LOCAL_WORLD_SIZE": str(n),
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }  # fmt: skip

    def start(rank: int, rejoin: bool) -> Any:
        env = {
            **base,
            "MASTER_PORT": str(stores[-1].port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
        }
        if rejoin:
            env[REJOIN_ENV] = "1"
        console = rank == 0 and not rejoin
        log = str(logs / f"agent{rank}.out")
        args = (cfg.to_dict(), job_factory, resume and not rejoin,
                None if rejoin else faults, progress and rank == 0 and not rejoin)  # fmt: skip
        proc = ctx.Process(
            target=_child,
            args=(rank, env, log, console, os.getpid(), args),
            name=f"ddla-agent-{rank}",
        )
        proc.start()
        return proc

    procs = {rank: start(rank, False) for rank in range(n)}
    restarts = cfg.fault.max_restarts
    failed: dict[int, int] = {}
    finished_at: float | None = None
    try:
        while any(p.exitcode is None for p in procs.values()):
            time.sleep(0.1)
            if finished_at is None and (out / SUMMARY).exists():
                finished_at = time.monotonic()
            if finished_at is not None and time.monotonic() - finished_at > _FINISH_GRACE_S:
                break  # the run is over: an agent still waiting to rejoin never will be
            for rank, proc in list(procs.items()):
                code = proc.exitcode
                if code is None or code == 0 or rank in failed:
                    continue
                control().delete_key(f"{RESTARTING_KEY}/{rank}")  # not coming back
                if restarts > 0 and not (out / SUMMARY).exists():
                    restarts -= 1
                    if not control().check([STARTED_KEY]):
                        # Lost before the group formed: nobody to rejoin; start all afresh,
                        # on a fresh Store (torchelastic's model, before training began).
                        _print(f"agent {rank} exited with code {code} before training began; "
                               f"restarting every agent ({restarts} restart(s) left)")  # fmt: skip
                        _end(procs.values())
                        stores.append(dist.TCPStore("127.0.0.1", 0, None, True, timeout,
                                                    wait_for_workers=False))  # fmt: skip
                        procs = {r: start(r, False) for r in range(n)}
                        break
                    _print(f"agent {rank} exited with code {code}; restarting it "
                           f"({restarts} restart(s) left)")  # fmt: skip
                    control().set(f"{RESTARTING_KEY}/{rank}", b"1")
                    procs[rank] = start(rank, True)
                else:
                    failed[rank] = code
            if failed and len(failed) == len(procs):
                break
            if finished_at is None and (stranded := _stranded(procs, control())):
                _print(f"no agent of the run is left to admit the restarted agent(s) "
                       f"{', '.join(map(str, stranded))}; stopping them")  # fmt: skip
                raise AgentFailedError(
                    f"every agent of the run was lost before the restarted agent(s) "
                    f"{', '.join(map(str, stranded))} could rejoin: nobody holds the current "
                    "model to pull",
                    help=interrupt_help(cfg, out),
                )
    except KeyboardInterrupt:
        raise AgentFailedError(
            "interrupted; all agents stopped", help=interrupt_help(cfg, out)
        ) from None
    finally:
        _end(procs.values())
        stores.clear()
    # summary.json is written last, by rank 0 of the final membership, after every agent's
    # part of the run: agents still tearing down (or a restarted one never admitted) after
    # the grace are stopped without failing the run.
    if not (out / SUMMARY).exists():
        raise _agent_failure(out, _Failures(failed))


def _stranded(procs: dict[int, Any], control: Any) -> list[int]:
    """Restarted agents still waiting to be admitted when no member of the run is alive to
    admit them (then they would wait ``fault.rejoin_timeout_s`` each, and be restarted to
    wait again): empty while any member lives or nothing waits.

    A restarted agent is flagged under ``RESTARTING_KEY/<rank>`` by the launcher until it
    is admitted (it deletes the flag when it has its ticket, ``ElasticGroup.pull``)."""
    from ddla.comm.elastic import RESTARTING_KEY, STARTED_KEY

    live = [r for r, p in procs.items() if p.exitcode is None]
    if not live or not control.check([STARTED_KEY]):
        return []
    waiting = [r for r in live if control.check([f"{RESTARTING_KEY}/{r}"])]
    return waiting if len(waiting) == len(live) else []


def _print(line: str) -> None:
    print(f"ddla: {line}", file=sys.stderr, flush=True)


def _end(procs: Any) -> None:
    """Stop and join agent processes: SIGTERM, then SIGKILL after 5 s."""
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join()


class _Failures(Exception):
    """What ``_agent_failure`` reads when no agent recorded an error: rank -> exit code."""

    def __init__(self, failed: dict[int, int]) -> None:
        super().__init__("agents failed")
        self.failures = {r: _Code(c) for r, c in failed.items()}


class _Code:
    def __init__(self, exitcode: int) -> None:
        self.exitcode = exitcode
