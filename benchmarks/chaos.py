"""Chaos: a random agent SIGKILLed every ~N seconds, restarted each time; against a fault-free run.

For each strategy, side by side in one invocation: the run without faults, then the same run
while a chaos thread kills a random live agent process every ``--every`` seconds (+-25%) for
``--duration`` seconds. ``diloco`` survives (the others go on, the dead agent is restarted and
rejoins from a live peer: ``ddla/launch/supervise.py``); ``allreduce`` is restarted whole from
its last checkpoint by the elastic launcher (``fault.max_restarts``). Figures: final accuracy
of both runs, kills, recoveries, time to detect and recover (median, max, from summary.json's
``faults``), steps lost, and the longest any agent waited in a failed call (against
``comm.timeout_s``).

    nice -n 10 python benchmarks/chaos.py --agents 4 --duration 180 --every 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from records import write_record

import ddla


def _agents() -> list[psutil.Process]:
    """This process's live agent processes (spawned children, not the resource tracker)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
            if "spawn_main" in cmd and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _training(out: Path, agents: int) -> bool:
    """Whether every agent has logged its shard (the run's group formed, training begins)."""
    logs = [out / "logs" / f"agent{r}.log" for r in range(agents)]
    return all(log.is_file() and "shard of" in log.read_text() for log in logs)


def _chaos(
    stop: threading.Event, every: float, duration: float, kills: list[dict[str, Any]],
    out: Path, agents: int,
) -> None:  # fmt: skip
    # The clock starts when training does: on a loaded machine agents take a while to start,
    # and a kill before the group forms only restarts everyone (no survival to measure).
    while not _training(out, agents):
        if stop.wait(0.5):
            return
    rng = random.Random(0)
    began = time.monotonic()
    while not stop.wait(every * rng.uniform(0.75, 1.25)):
        if time.monotonic() - began > duration:
            return
        agents = _agents()
        if len(agents) < 2:
            continue
        victim = rng.choice(agents)
        try:
            victim.send_signal(signal.SIGKILL)
            kills.append({"pid": victim.pid, "t": round(time.monotonic() - began, 2)})
        except psutil.Error:
            continue


def _run(
    overrides: list[str], out: Path, agents: int, *, chaos: tuple[float, float] | None
) -> dict[str, Any]:
    kills: list[dict[str, Any]] = []
    stop = threading.Event()
    thread = None
    if chaos is not None:
        thread = threading.Thread(
            target=_chaos, args=(stop, *chaos, kills, out, agents), daemon=True
        )
        thread.start()
    t0 = time.monotonic()
    error = None
    try:
        ddla.launch(overrides=[*overrides, f"out={out}"], progress=False, force=True)
    except ddla.DdlaError as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        stop.set()
        if thread is not None:
            thread.join()
    wall = time.monotonic() - t0
    summary = json.loads((out / "summary.json").read_text()) if error is None else {}
    faults = summary.get("faults", [])
    lost = [f for f in faults if f["kind"] != "rejoined"]
    back = [f for f in faults if f["kind"] == "rejoined"]

    def stats(values: list[float]) -> dict[str, float] | None:
        return (
            {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}
            if values
            else None
        )

    return {
        "error": error,
        "wall_s": round(wall, 1),
        "accuracy": summary.get("final", {}).get("accuracy"),
        "kills": len(kills),
        "kill_times_s": [k["t"] for k in kills],
        "losses_survived": len(lost),
        "rejoins": len(back),
        "detect_s": stats([f["detect_s"] for f in lost]),
        "recover_s": stats([f["recover_s"] for f in lost]),
        "rejoin_s": stats([f["recover_s"] for f in back]),
        "steps_lost": sum(f["steps_lost"] for f in lost),
        "longest_wait_s": max((f["detect_s"] for f in lost), default=0.0),
        "members_end": summary.get("members", {}).get("end"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--every-h", type=int, default=50, help="DiLoCo's H")
    p.add_argument("--duration", type=float, default=180.0)
    p.add_argument("--every", type=float, default=20.0, help="seconds between kills")
    p.add_argument("--timeout", type=float, default=30.0, help="comm.timeout_s")
    p.add_argument("--strategies", default="diloco,allreduce")
    args = p.parse_args()
    common = [
        f"agents={args.agents}", f"data.dataset={args.dataset}", f"train.steps={args.steps}",
        "train.eval_every=0", f"comm.timeout_s={args.timeout}", "fault.max_restarts=1000",
    ]  # fmt: skip
    per = {
        "diloco": ["sync.strategy=diloco", f"sync.every={args.every_h}"],
        "allreduce": ["sync.strategy=allreduce", f"train.checkpoint_every={args.every_h}"],
    }
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ddla-chaos-") as tmp:
        for name in args.strategies.split(","):
            overrides = [*common, *per[name]]
            row = {}
            for label, chaos in (("fault_free", None), ("chaos", (args.every, args.duration))):
                row[label] = _run(
                    overrides, Path(tmp) / f"{name}-{label}", args.agents, chaos=chaos
                )
                print(name, label, json.dumps(row[label]), flush=True)
            a, b = row["fault_free"]["accuracy"], row["chaos"]["accuracy"]
            row["accuracy_gap_points"] = None if a is None or b is None else round(100 * (a - b), 2)
            figures[name] = row
    path = write_record("chaos", config=vars(args), figures=figures)
    print(f"record: {path}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
