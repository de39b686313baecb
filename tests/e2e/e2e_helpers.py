"""Helpers for end-to-end tests: run the real CLI / launcher and check no process is left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Small, fast job used by the end-to-end tests: 2 agents on scikit-learn digits.
FAST = [
    "agents=2", "data.dataset=digits", "model.hidden=64", "train.eval_every=10",
    "optim.schedule=constant",  # the constant rate these figures were written for
]  # fmt: skip


def descendants(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent chain reaches ``pid``."""
    parents: dict[int, int] = {}
    servers: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        # multiprocessing's resource tracker lives as long as the test runner by design.
        if fields[0] != "Z" and b"resource_tracker" not in cmd:
            parents[int(entry.name)] = int(fields[1])
        # The warm agent server (ddla/warm.py) also lives as long as the process that started
        # it. The agents it forks are its children (with its command line): the walk goes
        # through it, and only the server itself, whose parent is not one, is left out.
        if b"multiprocessing.forkserver" in cmd:
            servers.add(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        found += kids
        frontier += kids
    server = {p for p in servers if parents.get(p) not in servers}
    return [p for p in found if p not in server]


def cli(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None, **kw
) -> subprocess.CompletedProcess:
    """Run ``python -m ddla.cli ARGS`` from the repo root (``env``: extra variables)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ddla.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )


def torchrun_nodes(*target: str, nodes: int = 2, timeout: float = 400) -> list[str]:
    """Start ``nodes`` torchrun invocations of ``target`` (``-m ddla.agent ...`` or a script)
    on loopback, one process each, as ``--nnodes N`` machines would; wait for them and assert
    that every node exited 0. Returns each node's combined output."""
    # Imported here: e2e_helpers is imported by tests that never start an agent.
    import uuid

    from ddla.testing import free_port

    port, run_id = free_port(), f"ddla-test-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run",
             "--nnodes", str(nodes), "--nproc-per-node", "1", "--node-rank", str(rank),
             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
             "--rdzv-id", run_id, "--local-addr", "127.0.0.1", *target],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in range(nodes)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * nodes, outputs
    return outputs
