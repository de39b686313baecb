"""torchft against ddla's own regroup: one replica killed and restarted, the same model.

The issue's engine question, decided by measurement: torchft 0.2.0 (its Lighthouse quorum,
``Manager``, reconfigurable ``ProcessGroupGloo``, DDP with per-step allreduce and live healing
over HTTP from a peer) and ddla's regroup/rejoin (``ddla/comm/elastic.py`` under
``ddla/launch/supervise.py``), side by side in one invocation, on the same zoo model and data
(``job_from_config``), the same number of CPU gloo processes (one thread each), the same
fault: one process SIGKILLs itself at a step and is started again.

Figures, each side:

* ``stall_s``: what the loss cost the survivors. torchft: from the kill until their first
  committed step without the dead replica, less one ordinary step (``kill_to_training_s``;
  ``detect_s``, the end of a step that failed on the dead peer, when one did: a replica
  killed between two steps is left out by the next quorum instead). ddla: the time the
  survivors waited in the failed synchronization (``detect_s``) plus the regroup
  (``recover_s``), from ``summary.json`` (a periodic strategy needs the dead agent only at
  its next synchronization);
* ``rejoin_s``: from the restarted process being ready to join (torchft: its model, DDP and
  Manager made; ddla: its model and strategy built, asking to be admitted) until it trains
  with all the others again (torchft: its first committed step with every participant; ddla:
  admitted at the others' next synchronization, group built, state pulled: its log line
  "rejoined at step ... (admitted after A s; state of B bytes pulled in C s)");
* ``heal_bytes``: the state the newcomer pulled (torchft: the HTTP body it read; ddla: the
  ``heal`` blob, ``summary.json``'s ``heal_bytes``), and the steps the survivors lost;
* code size: Python lines each side needs, and torchft's compiled Rust extension.

    nice -n 10 python benchmarks/torchft_side_by_side.py --replicas 3
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from records import write_record

import ddla

ROOT = Path(__file__).resolve().parents[1]


# ---- torchft: one replica group (world size 1) per process ---------------------------------


def _replica(
    index: int, replicas: int, lighthouse: str, overrides: list[str], out: str,
    kill_at: int | None, timeout_s: float,
) -> None:  # fmt: skip
    """One torchft replica: DDP over the Manager's reconfigurable gloo group, AdamW, its own
    shard; logs every step (committed or not, participants, bytes healed) as JSON lines."""
    import torch
    from torchft import Manager, ProcessGroupGloo
    from torchft.checkpointing._serialization import _streaming_load
    from torchft.checkpointing.http_transport import HTTPTransport
    from torchft.ddp import DistributedDataParallel
    from torchft.optim import OptimizerWrapper

    from ddla.config import RunConfig
    from ddla.job import job_from_config

    torch.set_num_threads(1)

    class CountingHTTP(HTTPTransport):
        """torchft's HTTP checkpoint transport, counting the body bytes a healer reads."""

        received = 0
        seconds = 0.0

        @classmethod
        def _load_from_address(cls, address: str, timeout: timedelta) -> object:
            began = time.monotonic()
            with urllib.request.urlopen(address, timeout=timeout.total_seconds()) as f:
                body = f.read()
            cls.received += len(body)
            state = _streaming_load(io.BytesIO(body), weights_only=False)
            cls.seconds += time.monotonic() - began
            return state

    config = RunConfig.load(None, overrides)
    job = job_from_config(config)
    model = job.model
    x, y = job.train
    x, y = torch.as_tensor(x[index::replicas]), torch.as_tensor(y[index::replicas])  # its shard
    inner = torch.optim.AdamW(model.parameters(), lr=1e-3)
    limit = timedelta(seconds=timeout_s)
    store = torch.distributed.TCPStore("127.0.0.1", 0, None, True, limit, wait_for_workers=False)
    log = open(Path(out) / f"replica{index}.jsonl", "a", buffering=1)  # noqa: SIM115

    def state_dict() -> dict[str, Any]:
        return {"model": model.state_dict(), "optim": inner.state_dict()}

    def load_state_dict(state: dict[str, Any]) -> None:
        model.load_state_dict(state["model"])
        inner.load_state_dict(state["optim"])

    manager = Manager(
        pg=ProcessGroupGloo(timeout=limit), min_replica_size=2,
        load_state_dict=load_state_dict, state_dict=state_dict,
        replica_id=f"replica_{index}", store_addr="127.0.0.1", store_port=store.port,
        rank=0, world_size=1, lighthouse_addr=lighthouse, timeout=limit,
        quorum_timeout=limit, connect_timeout=limit,
        checkpoint_transport=CountingHTTP(timeout=limit, num_chunks=0),
    )  # fmt: skip
    ddp = DistributedDataParallel(manager, model)
    opt = OptimizerWrapper(manager, inner)
    log.write(json.dumps({"event": "ready", "t": time.time()}) + "\n")
    stop = Path(out) / "stop"
    batch, g = 64, torch.Generator().manual_seed(index)
    while True:
        began = time.time()
        before = manager.current_step()
        opt.zero_grad()  # starts the quorum (asynchronously, overlapping the forward pass)
        idx = torch.randint(len(x), (batch,), generator=g)
        loss = torch.nn.functional.cross_entropy(ddp(x[idx]), y[idx])
        loss.backward()  # DDP's buckets allreduce through the Manager
        opt.step()  # should_commit: every participant votes
        step = manager.current_step()
        log.write(json.dumps({
            "t0": began, "t": time.time(), "step": step, "committed": step > before,
            "participants": manager.num_participants(), "healed_bytes": CountingHTTP.received,
            "heal_s": round(CountingHTTP.seconds, 4),
        }) + "\n")  # fmt: skip
        if kill_at is not None and step >= kill_at:
            log.write(json.dumps({"event": "kill", "t": time.time()}) + "\n")
            log.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if stop.exists() and step >= int(stop.read_text()):
            break
    manager.shutdown(wait=False)


def _records(out: Path, index: int) -> list[dict[str, Any]]:
    path = out / f"replica{index}.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait(predicate: Any, limit_s: float, what: str) -> None:
    end = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"torchft side: {what} not within {limit_s:g} s")
        time.sleep(0.2)


def run_torchft(args: argparse.Namespace, overrides: list[str], out: Path) -> dict[str, Any]:
    from torchft._torchft import LighthouseServer

    n, victim = args.replicas, 1
    # A dead replica stops heartbeating; the Lighthouse drops it after heartbeat_timeout_ms
    # (3 s: ddla names a silent peer after 3 heartbeat intervals of 1 s, the same bound).
    lighthouse = LighthouseServer(
        bind="[::]:0", min_replicas=n - 1, join_timeout_ms=1000, quorum_tick_ms=100,
        heartbeat_timeout_ms=3000,
    )  # fmt: skip
    ctx = mp.get_context("spawn")

    def start(i: int, kill_at: int | None) -> Any:
        proc = ctx.Process(
            target=_replica,
            args=(i, n, lighthouse.address(), overrides, str(out), kill_at, args.timeout),
            name=f"torchft-replica-{i}",
        )
        proc.start()
        return proc

    began = time.monotonic()
    procs = {i: start(i, args.kill_at if i == victim else None) for i in range(n)}
    try:
        procs[victim].join(args.limit)
        if procs[victim].exitcode is None:
            raise TimeoutError(f"torchft side: replica {victim} did not reach step {args.kill_at}")
        restarted_at = time.time()
        procs[victim] = start(victim, None)

        def back() -> bool:
            mine = [r for r in _records(out, victim) if r.get("t", 0) > restarted_at]
            full = [r for r in mine if r.get("committed") and r["participants"] == n]
            return len(full) >= args.after

        _wait(back, args.limit, f"the restarted replica committing {args.after} steps")
        last = max(r.get("step", 0) for i in range(n) for r in _records(out, i))
        (out / "stop").write_text(str(last + 3))
        for proc in procs.values():
            proc.join(args.limit)
    finally:
        for proc in procs.values():
            if proc.is_alive():
                proc.kill()
        lighthouse.shutdown()
    wall = time.monotonic() - began
    logs = {i: _records(out, i) for i in range(n)}
    kill_t = next(r["t"] for r in logs[victim] if r.get("event") == "kill")
    steady = [r["t"] - r["t0"] for r in logs[0] if r.get("committed") and r["t"] < kill_t]
    step_s = statistics.median(steady)
    detect, back, lost = [], [], []
    for i in range(n):
        if i == victim:
            continue
        after = [r for r in logs[i] if "step" in r and r["t"] > kill_t]
        # A step that did not commit: the survivor's allreduce failed on the dead peer (none
        # when the next quorum already left it out: it died between two steps).
        failed = next((r for r in after if not r["committed"]), None)
        fewer = next(r for r in after if r["committed"] and r["participants"] == n - 1)
        if failed is not None:
            detect.append(failed["t"] - kill_t)
        back.append(fewer["t"] - kill_t)
        lost.append(sum(1 for r in after if not r["committed"] and r["t"] <= fewer["t"]))
    second = logs[victim][[r.get("event") for r in logs[victim]].index("kill") + 1 :]
    ready = next(r["t"] for r in second if r.get("event") == "ready")
    joined = next(r for r in second if r.get("committed") and r["participants"] == n)
    return {
        "wall_s": round(wall, 1),
        "detect_s": round(max(detect), 3) if detect else None,
        "kill_to_training_s": round(max(back), 3),
        # what the loss cost the survivors: the time to a committed step without the dead
        # replica, less one ordinary step
        "stall_s": round(max(back) - step_s, 3),
        "steps_lost": max(lost),
        "rejoin_s": round(joined["t"] - ready, 3),
        "restart_to_ready_s": round(ready - restarted_at, 3),
        "heal_bytes": joined["healed_bytes"],
        "heal_s": joined["heal_s"],
        "step_s_median": round(step_s, 4),
        "lighthouse": {
            "min_replicas": n - 1,
            "join_timeout_ms": 1000,
            "quorum_tick_ms": 100,
            "heartbeat_timeout_ms": 3000,
        },
    }


# ---- ddla: regroup among the survivors, restart, rejoin by pulling from a live peer --------


def run_ddla(args: argparse.Namespace, overrides: list[str], out: Path) -> dict[str, Any]:
    began = time.monotonic()
    ddla.launch(
        overrides=[
            *overrides, f"agents={args.replicas}", "sync.strategy=diloco",
            f"sync.every={args.sync_every}", f"train.steps={args.ddla_steps}",
            "train.eval_every=0", f"comm.timeout_s={args.timeout}",
            f"fault.kill=1@{args.kill_at}", "fault.max_restarts=1",
            # the survivors hold a sync for the restarting agent, so it rejoins in the run
            f"fault.rejoin_wait_s={args.timeout * 0.8:g}", f"out={out}",
        ],
        progress=False,
    )  # fmt: skip
    wall = time.monotonic() - began
    summary = json.loads((out / "summary.json").read_text())
    killed = next(e for e in summary["faults"] if e["kind"] != "rejoined")
    rejoined = next(e for e in summary["faults"] if e["kind"] == "rejoined")
    text = (out / "logs" / "agent1.log").read_text()
    # the restarted agent's own account: waiting for admission, then the group and the pull
    admitted, pulled = map(
        float, re.search(r"admitted after ([\d.]+) s.* in ([\d.]+) s", text).groups()
    )
    return {
        "wall_s": round(wall, 1),
        "detect_s": killed["detect_s"],
        "recover_s": killed["recover_s"],
        # the survivors lost this much at the sync that needed the dead agent
        "stall_s": round(killed["detect_s"] + killed["recover_s"], 3),
        "steps_lost": killed["steps_lost"],
        "rejoin_s": round(admitted + pulled, 3),
        "rejoin_admission_wait_s": admitted,
        "heal_bytes": rejoined["heal_bytes"],
        "heal_s": pulled,
        "accuracy": summary["final"]["accuracy"],
        "members_end": summary["members"]["end"],
    }


# ---- code size --------------------------------------------------------------------------


def _lines(paths: list[Path]) -> int:
    return sum(len(p.read_text().splitlines()) for p in paths)


def code_size() -> dict[str, Any]:
    import torchft

    tf = Path(torchft.__file__).parent
    used = ["manager.py", "process_group.py", "ddp.py", "optim.py", "checkpointing/transport.py",
            "checkpointing/http_transport.py", "checkpointing/_serialization.py",
            "checkpointing/_rwlock.py", "http.py", "futures.py", "work.py", "utils.py"]  # fmt: skip
    ext = next(tf.glob("_torchft*.so"), None)
    ours = ["ddla/comm/elastic.py", "ddla/comm/heartbeat.py", "ddla/launch/supervise.py"]
    return {
        "ddla_python_lines": _lines([ROOT / p for p in ours]),
        "ddla_files": ours,
        "torchft_python_lines": _lines([tf / p for p in used]),
        "torchft_files": used,
        "torchft_extension_bytes": ext.stat().st_size if ext is not None else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--kill-at", type=int, default=40, help="step at which replica 1 dies")
    p.add_argument("--after", type=int, default=10, help="torchft: steps after the rejoin")
    p.add_argument("--sync-every", type=int, default=10, help="ddla: DiLoCo's H")
    p.add_argument("--ddla-steps", type=int, default=400)
    p.add_argument("--timeout", type=float, default=60.0, help="comm.timeout_s / torchft's")
    p.add_argument("--limit", type=float, default=600.0, help="seconds for any one phase")
    p.add_argument("--sides", default="torchft,ddla")
    args = p.parse_args()
    overrides = [f"data.dataset={args.dataset}"]
    figures: dict[str, Any] = {"load_average_start": os.getloadavg(), "code": code_size()}
    with tempfile.TemporaryDirectory(prefix="ddla-torchft-") as tmp:
        for side in args.sides.split(","):
            out = Path(tmp) / side
            out.mkdir()
            run = run_torchft if side == "torchft" else run_ddla
            figures[side] = run(args, overrides, out)
            print(side, json.dumps(figures[side]), flush=True)
    figures["load_average_end"] = os.getloadavg()
    print("code", json.dumps(figures["code"]))
    path = write_record("torchft_side_by_side", config=vars(args), figures=figures)
    print(f"record: {path}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
