"""Helpers for tests that need real agents: ``run_agents``, ``free_port`` and ``FaultInjector``.

``run_agents`` spawns ``world_size`` real processes joined by a real gloo process group on
127.0.0.1, runs ``fn(transport, *args, **kwargs)`` in each and returns the results in rank
order. A rank that raises makes it terminate the others and re-raise that error, with the rank
in the message; no child process outlives the call.

Example (``fn`` must be a top-level function of an importable module, so spawn can pickle it)::

    import torch
    from ddla.testing import run_agents

    def total(transport, value):
        return transport.all_reduce(torch.tensor([value + transport.rank])).item()

    assert run_agents(total, 2, 1.0) == [3.0, 3.0]

Faults are data: ``FaultInjector().kill(rank=1, at_step=30)`` travels to the agents like any
config, and the training loop calls ``faults.apply(rank, step)`` each step.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import pickle
import queue as queue_module
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from ddla.errors import AgentFailedError, ConfigError, DdlaError

# How long a child that exited without a result may still have one in flight in the queue.
_RESULT_GRACE_S = 1.0
# How long finished children get to tear down their process group before being terminated.
_EXIT_GRACE_S = 2.0
KILL_EXIT_CODE = 43  # distinctive, so a killed agent is recognisable in logs and tests
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True, slots=True)
class AgentExit:
    """The result of a rank listed in ``allow_exit`` that exited without returning."""

    rank: int
    exitcode: int


class _RemoteTraceback(Exception):
    """Carries a child's formatted traceback as the ``__cause__`` of a re-raised error."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def run_agents(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout_s: float = 120.0,
    backend: str = "gloo",
    allow_exit: Collection[int] = (),
    restart: Mapping[int, Callable[..., Any]] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """Run ``fn(transport, *args, **kwargs)`` on ``world_size`` spawned agents; results by rank.

    Each agent joins a ``backend`` process group on 127.0.0.1 and gets a
    :class:`~ddla.comm.Transport` whose default call timeout is ``min(60, timeout_s)``.
    The first failure seen (a raised exception, or a rank that exits without a result unless
    it is in ``allow_exit``; such a rank's result is an :class:`AgentExit`) is re-raised with
    its rank after the other agents are terminated. A rank in ``restart`` that exits is
    started again once, as ``restart[rank](store, rank, world_size, *args, **kwargs)`` with
    the run's Store and no process group (a restarted agent rejoins on its own); its result is
    that call's. A rank in ``allow_exit`` frozen by SIGSTOP is killed once every other rank
    returned. Past ``timeout_s`` every agent is killed
    and :class:`AgentFailedError` is raised. Every child is joined before this returns.
    """
    if world_size < 1:
        raise ValueError(f"run_agents: world_size must be >= 1, got {world_size}")
    if not timeout_s > 0:
        raise ValueError(f"run_agents: timeout_s must be > 0, got {timeout_s}")
    import torch.distributed as dist  # late: keep `import ddla.testing` light

    ctx = mp.get_context("spawn")
    # The parent hosts the store on a port the OS picks while binding: no free-port race.
    store = dist.TCPStore(
        "127.0.0.1", 0, None, True, timedelta(seconds=timeout_s), wait_for_workers=False
    )
    results_queue = ctx.Queue()
    procs = [
        ctx.Process(
            target=_agent_main,
            args=(rank, world_size, store.port, backend, timeout_s, os.getpid()),
            kwargs={"fn": fn, "args": args, "kwargs": kwargs, "results": results_queue},
            name=f"ddla-agent-{rank}",
        )
        for rank in range(world_size)
    ]
    try:
        for proc in procs:
            proc.start()
        respawn = _respawner(procs, ctx, store.port, timeout_s, restart or {}, args, kwargs,
                             results_queue)  # fmt: skip
        results, failure = _collect(
            procs, results_queue, timeout_s, set(allow_exit) | set(restart or {}), respawn
        )
    finally:
        _stop(procs, graceful=True)
        results_queue.close()
        results_queue.join_thread()
        del store
    if failure is not None:
        raise failure
    return [results[rank] for rank in range(world_size)]


def _respawner(
    procs: list[Any], ctx: Any, port: int, timeout_s: float,
    restart: Mapping[int, Callable[..., Any]], args: tuple[Any, ...], kwargs: dict[str, Any],
    results: Any,
) -> Callable[[int], bool]:  # fmt: skip
    """``respawn(rank)``: start ``restart[rank]`` in place of the exited rank, once."""
    done: set[int] = set()

    def respawn(rank: int) -> bool:
        if rank not in restart or rank in done:
            return False
        done.add(rank)
        procs[rank] = ctx.Process(
            target=_restarted_main,
            args=(rank, len(procs), port, timeout_s, os.getpid()),
            kwargs={"fn": restart[rank], "args": args, "kwargs": kwargs, "results": results},
            name=f"ddla-agent-{rank}-restarted",
        )
        procs[rank].start()
        return True

    return respawn


def _collect(
    procs: list[Any],
    results_queue: Any,
    timeout_s: float,
    allow_exit: set[int],
    respawn: Callable[[int], bool] = lambda rank: False,
) -> tuple[dict[int, Any], BaseException | None]:
    """Read results until every rank reported, one failed, or time ran out."""
    results: dict[int, Any] = {}
    exited_at: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(results) < len(procs):
        try:
            kind, rank, blob, tb = results_queue.get(timeout=0.05)
        except queue_module.Empty:
            pass
        else:
            if kind == "ok":
                results[rank] = pickle.loads(blob)
            else:
                _stop(procs, graceful=False)
                return results, _with_rank(pickle.loads(blob), rank, tb)
        now = time.monotonic()
        for rank, proc in enumerate(procs):
            if rank in results or proc.exitcode is None:
                continue
            if now - exited_at.setdefault(rank, now) < _RESULT_GRACE_S:
                continue  # its result may still be in the queue's pipe
            if proc.exitcode != 0 and respawn(rank):
                exited_at.pop(rank)
                continue
            if rank in allow_exit:
                results[rank] = AgentExit(rank=rank, exitcode=proc.exitcode)
                continue
            _stop(procs, graceful=False)
            return results, AgentFailedError(
                f"rank {rank} exited with code {proc.exitcode} before returning a result",
                help="look for a crash (os._exit, a signal, out of memory) in that agent's output",
            )
        if all(r in results for r in range(len(procs)) if r not in allow_exit):
            for rank in range(len(procs)):  # the others are done: a frozen agent never will be
                if rank not in results and _is_stopped(procs[rank]):
                    procs[rank].kill()
                    procs[rank].join(5.0)
                    results[rank] = AgentExit(rank=rank, exitcode=procs[rank].exitcode or -9)
        if now > deadline:
            missing = [rank for rank in range(len(procs)) if rank not in results]
            _stop(procs, graceful=False)
            return results, AgentFailedError(
                f"run_agents timed out after {timeout_s:g} s; ranks {missing} did not finish",
                help="an agent is stuck (a collective its peers never call?) or timeout_s is "
                "too short",
            )
    return results, None


def _is_stopped(proc: Any) -> bool:
    """Whether ``proc`` is frozen (SIGSTOP: state T in /proc; False where unknown)."""
    try:
        with open(f"/proc/{proc.pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError, TypeError):
        return False


def _stop(procs: list[Any], *, graceful: bool) -> None:
    """Join every started child: wait if graceful, else SIGTERM, then SIGKILL stragglers."""
    started = [proc for proc in procs if proc.pid is not None]
    if graceful:
        deadline = time.monotonic() + _EXIT_GRACE_S
        for proc in started:
            proc.join(max(deadline - time.monotonic(), 0.0))
    for proc in started:
        if proc.is_alive():
            proc.terminate()
    for proc in started:
        proc.join(2.0)
        if proc.is_alive():
            proc.kill()
            proc.join()


def _with_rank(exc: BaseException, rank: int, tb: str) -> BaseException:
    """The child's error, same type where possible, with its rank in the message."""
    message = f"rank {rank}: {exc}"
    new: BaseException
    if isinstance(exc, DdlaError):
        new = type(exc)(message, help=exc.help)
    else:
        try:
            new = type(exc)(message)
        except Exception:
            new = AgentFailedError(f"rank {rank} raised {type(exc).__name__}: {exc}")
    new.__cause__ = _RemoteTraceback(f"\n--- traceback in rank {rank} ---\n{tb}")
    return new


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this agent if the test process dies, so none is ever orphaned."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _agent_main(
    rank: int,
    world_size: int,
    port: int,
    backend: str,
    timeout_s: float,
    parent_pid: int,
    *,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    results: Any,
) -> None:
    _die_with_parent(parent_pid)
    import torch.distributed as dist

    from ddla.comm import Transport
    from ddla.comm.join import init_group

    try:
        limit = timedelta(seconds=timeout_s)
        store = dist.TCPStore("127.0.0.1", port, None, False, limit)
        ddla_store = init_group(backend, store, rank=rank, world_size=world_size, timeout=limit)
        try:
            transport = Transport(timeout_s=min(60.0, timeout_s), store=ddla_store)
            value = fn(transport, *args, **kwargs)
            transport.close()
        finally:
            dist.destroy_process_group()
        try:
            blob = pickle.dumps(value)
        except Exception as exc:
            raise TypeError(f"the result of {fn.__name__} is not picklable: {exc}") from exc
        sys.stdout.flush()
        sys.stderr.flush()
        results.put(("ok", rank, blob, ""))
    except BaseException as exc:
        results.put(("err", rank, _pickled_error(exc), traceback.format_exc()))


def _restarted_main(
    rank: int, world_size: int, port: int, timeout_s: float, parent_pid: int, *,
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], results: Any,
) -> None:  # fmt: skip
    """A restarted agent: the run's Store (ddla's prefix), no process group."""
    _die_with_parent(parent_pid)
    import torch.distributed as dist

    try:
        store = dist.TCPStore("127.0.0.1", port, None, False, timedelta(seconds=timeout_s))
        value = fn(dist.PrefixStore("ddla/", store), rank, world_size, *args, **kwargs)
        results.put(("ok", rank, pickle.dumps(value), ""))
    except BaseException as exc:
        results.put(("err", rank, _pickled_error(exc), traceback.format_exc()))


def _pickled_error(exc: BaseException) -> bytes:
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
        return blob
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected fault: ``kind`` happens to ``rank`` when it reaches step ``at_step``."""

    kind: str
    rank: int
    at_step: int
    exit_code: int = KILL_EXIT_CODE


class FaultInjector:
    """Faults as data: build a list, ship it to the agents, ``apply`` it each step.

    Example:
        >>> faults = FaultInjector().kill(rank=1, at_step=30)
        >>> faults.should_kill(1, 30), faults.should_kill(1, 29), faults.should_kill(0, 30)
        (True, False, False)
    """

    KINDS = ("kill", "stop")

    def __init__(self, faults: Iterable[Fault] = ()) -> None:
        self.faults: list[Fault] = list(faults)

    def kill(self, *, rank: int, at_step: int, exit_code: int = KILL_EXIT_CODE) -> FaultInjector:
        """Hard-exit agent ``rank`` (no cleanup, like a crash) when it reaches ``at_step``."""
        if rank < 0 or at_step < 0:
            raise ConfigError(
                f"fault kill(rank={rank}, at_step={at_step}) needs rank >= 0 and at_step >= 0",
                help="name an existing agent rank and a step the run will reach",
            )
        if not 0 < exit_code < 256:
            raise ConfigError(
                f"fault exit_code={exit_code} must be in 1..255", help="keep the default 43"
            )
        self.faults.append(Fault(kind="kill", rank=rank, at_step=at_step, exit_code=exit_code))
        return self

    def stop(self, *, rank: int, at_step: int) -> FaultInjector:
        """Freeze agent ``rank`` with SIGSTOP at ``at_step``: alive but not answering (a hung
        peer); whoever ends the run must kill it (the launcher does)."""
        if rank < 0 or at_step < 0:
            raise ConfigError(
                f"fault stop(rank={rank}, at_step={at_step}) needs rank >= 0 and at_step >= 0",
                help="name an existing agent rank and a step the run will reach",
            )
        self.faults.append(Fault(kind="stop", rank=rank, at_step=at_step))
        return self

    def _kill_for(self, rank: int, step: int) -> Fault | None:
        for fault in self.faults:
            if fault.kind == "kill" and fault.rank == rank and fault.at_step == step:
                return fault
        return None

    def _stop_for(self, rank: int, step: int) -> Fault | None:
        for fault in self.faults:
            if fault.kind == "stop" and fault.rank == rank and fault.at_step == step:
                return fault
        return None

    def should_kill(self, rank: int, step: int) -> bool:
        """Whether a kill fault targets ``rank`` at exactly ``step``."""
        return self._kill_for(rank, step) is not None

    def apply(self, rank: int, step: int) -> None:
        """Hard-exit (kill) or freeze (stop) this process if a fault matches ``rank``, ``step``."""
        fault = self._kill_for(rank, step)
        if fault is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(fault.exit_code)
        if self._stop_for(rank, step) is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGSTOP)

    def to_records(self) -> list[dict[str, Any]]:
        """Plain dicts (for a config file or JSON)."""
        return [asdict(fault) for fault in self.faults]

    @classmethod
    def from_records(cls, records: Iterable[dict[str, Any]]) -> FaultInjector:
        """Inverse of :meth:`to_records`; validates each fault."""
        injector = cls()
        for record in records:
            if record.get("kind") not in cls.KINDS:
                raise ConfigError(
                    f"unknown fault kind {record.get('kind')!r}",
                    help=f"choose one of: {', '.join(cls.KINDS)}",
                )
            if record["kind"] == "stop":
                injector.stop(rank=int(record["rank"]), at_step=int(record["at_step"]))
                continue
            injector.kill(
                rank=int(record["rank"]),
                at_step=int(record["at_step"]),
                exit_code=int(record.get("exit_code", KILL_EXIT_CODE)),
            )
        return injector

    def __len__(self) -> int:
        return len(self.faults)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FaultInjector) and self.faults == other.faults

    def __repr__(self) -> str:
        return f"FaultInjector({self.faults!r})"
