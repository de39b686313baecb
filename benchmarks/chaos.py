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
import itertools
import json
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from records import write_record

import ddla


def _agents() -> list[psutil.Process]:
    """This process's live agent processes: spawned ones (``spawn_main``, the fault-tolerant
    supervisor's) and those forked by the warm forkserver (the elastic launcher's default,
    ``ddla/warm.py``: a forked agent keeps the server's command line, so it is found as a
    child of the server), never the server or the resource tracker themselves."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
            parent = proc.parent()
            forked = (
                "forkserver" in cmd
                and parent is not None
                and "forkserver" in " ".join(parent.cmdline())
            )
            if ("spawn_main" in cmd or forked) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _training(out: Path, agents: int, strategy: str) -> bool:
    """Whether the run's training began. A periodic strategy's agents log "training began"
    once their group formed (``ElasticGroup.attach``): from then on a lost agent rejoins. A
    kill before that restarts every agent on a fresh Store (nobody to rejoin), and a chaos
    clock started earlier would keep hitting restarts. ``allreduce``: every agent logged
    its shard."""
    logs = [out / "logs" / f"agent{r}.log" for r in range(agents)]
    if strategy != "allreduce":
        return any(log.is_file() and "training began" in log.read_text() for log in logs)
    return all(log.is_file() and "shard of" in log.read_text() for log in logs)


def _chaos(
    stop: threading.Event, every: float, duration: float, kills: list[dict[str, Any]],
    out: Path, agents: int, strategy: str,
) -> None:  # fmt: skip
    # The clock starts when training does: on a loaded machine agents take a while to start,
    # and a kill before the group forms only restarts everyone (no survival to measure).
    while not _training(out, agents, strategy):
        if stop.wait(0.5):
            return
    rng = random.Random(0)
    began = time.monotonic()
    while not stop.wait(every * rng.uniform(0.75, 1.25)):
        if time.monotonic() - began > duration:
            return
        live = _agents()
        if len(live) < 2:
            continue
        victim = rng.choice(live)
        try:
            victim.send_signal(signal.SIGKILL)
            kills.append(
                {"pid": victim.pid, "t": round(time.monotonic() - began, 2), "wall": time.time()}
            )
        except psutil.Error:
            continue


_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) agent0 INFO (.*)$")


def _events(out: Path) -> list[tuple[float, str]]:
    """Rank 0's log lines as (epoch seconds, message); it is appended across restarts."""
    log = out / "logs" / "agent0.log"
    found = []
    for line in log.read_text().splitlines() if log.is_file() else []:
        if m := _LINE.match(line):
            when = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time
            found.append((when, m[2]))
    return found


def _seconds_per_step(out: Path, every: int) -> float | None:
    """From the checkpoint lines of a run: median seconds between two, per step."""
    times = [t for t, msg in _events(out) if msg.startswith("checkpoint at step")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return statistics.median(gaps) / every if gaps else None


def _whole_restarts(
    out: Path, kills: list[dict[str, Any]], every: int, step_s: float | None
) -> dict[str, Any]:
    """allreduce's restarts from rank 0's log: each kill ends the attempt; every agent starts
    again and resumes from the newest checkpoint ("resumed at step N"). Per kill that hit a
    training attempt: time until training resumed, and the work since that attempt's last
    checkpoint (lost: redone after the restart). A kill that lands while the agents are still
    starting (before an attempt trains) only restarts them again."""
    events = _events(out)
    starts = [t for t, msg in events if msg.startswith("shard of")]
    resumed = [(t, int(msg.split()[-1])) for t, msg in events if msg.startswith("resumed at step")]
    ckpts = [t for t, msg in events if msg.startswith("checkpoint at step")]
    recover, lost_s, during_start = [], [], 0
    for k, kill in enumerate(kills):
        t = kill["wall"]
        begun = [s for s in starts if s < t]
        nxt = [s for s in starts if s > t]
        # The attempt this kill hit: the last one that began training before it, unless an
        # earlier kill already ended that one (then the agents were still starting).
        if not begun or any(prev["wall"] > begun[-1] for prev in kills[:k]):
            during_start += 1
            continue
        attempt = begun[-1]
        if nxt:  # training again (later kills during the restart included: they delay it)
            recover.append(nxt[0] - t)
        since = max([c for c in ckpts if attempt < c < t], default=attempt)
        lost_s.append(t - since)
    steps = [round(s / step_s) for s in lost_s] if step_s else []
    return {
        "restarts": len(starts) - 1,
        "resumes_from_checkpoint": [step for _, step in resumed],
        "kills_while_starting": during_start,
        "restart_to_training_s": _stats(recover),
        "work_lost_s": _stats(lost_s),
        "steps_lost_estimated": sum(min(s, every) for s in steps) if steps else None,
        "seconds_per_step": None if step_s is None else round(step_s, 4),
    }


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def _run(
    overrides: list[str], out: Path, agents: int, strategy: str, *,
    chaos: tuple[float, float] | None,
) -> dict[str, Any]:  # fmt: skip
    kills: list[dict[str, Any]] = []
    stop = threading.Event()
    thread = None
    if chaos is not None:
        thread = threading.Thread(
            target=_chaos, args=(stop, *chaos, kills, out, agents, strategy), daemon=True
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
    return {
        "error": error,
        "wall_s": round(wall, 1),
        "accuracy": summary.get("final", {}).get("accuracy"),
        "kills": len(kills),
        "kill_times_s": [k["t"] for k in kills],
        "losses_survived": len(lost),
        "rejoins": len(back),
        "detect_s": _stats([f["detect_s"] for f in lost]),
        "recover_s": _stats([f["recover_s"] for f in lost]),
        "rejoin_s": _stats([f["recover_s"] for f in back]),
        "steps_lost": sum(f["steps_lost"] for f in lost),
        "longest_wait_s": max((f["detect_s"] for f in lost), default=0.0),
        "members_end": summary.get("members", {}).get("end"),
        "_kills": kills,
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
    figures: dict[str, Any] = {"load_average_start": os.getloadavg()}
    step_s = None
    with tempfile.TemporaryDirectory(prefix="ddla-chaos-") as tmp:
        for name in args.strategies.split(","):
            overrides = [*common, *per[name]]
            row = {}
            for label, chaos in (("fault_free", None), ("chaos", (args.every, args.duration))):
                out = Path(tmp) / f"{name}-{label}"
                row[label] = _run(overrides, out, args.agents, name, chaos=chaos)
                kills = row[label].pop("_kills")
                if name == "allreduce":  # torchelastic's model: every agent restarts
                    if label == "fault_free":
                        step_s = _seconds_per_step(out, args.every_h)
                    else:
                        row[label].update(_whole_restarts(out, kills, args.every_h, step_s))
                print(name, label, json.dumps(row[label]), flush=True)
            a, b = row["fault_free"]["accuracy"], row["chaos"]["accuracy"]
            row["accuracy_gap_points"] = None if a is None or b is None else round(100 * (a - b), 2)
            figures[name] = row
    figures["load_average_end"] = os.getloadavg()
    path = write_record("chaos", config=vars(args), figures=figures)
    print(f"record: {path}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
