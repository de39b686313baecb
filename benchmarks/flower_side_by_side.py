"""ddla's federated mode beside Flower's simulation engine on Flower's FedAvg workload.

Workload (../shared/peers/flwr/README.md): Fashion-MNIST, MLP 784-128-128-10, 100 clients of
600 examples (iid, or 2 label-sorted shards each), C = 0.1, E = 1, B = 10, SGD lr 0.05, 20
rounds, the global model evaluated on the 10k test set after every round, one intra-op thread
per process. ddla runs it as `ddla run` does (2 agents on this 2-core machine: the same CPU
budget as Flower's 2 Ray CPUs); Flower runs the peer's ready script in its own venv
(telemetry off). Each variant runs ddla then Flower back to back, in one invocation.

ddla uses its own seeded sampling, batch order and partitioners (``iid``, ``pathological:2``),
so its accuracy curve is the same workload, not bitwise Flower's.

    FLWR_VENV=/tmp/fed2-flwr-venv nice -n 10 .venv/bin/python benchmarks/flower_side_by_side.py

``--variants noniid`` runs the pathological non-IID split (2 label-sorted shards per client:
the peer's ``noniid``, ddla's ``data.partition=pathological:2``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

import ddla
from benchmarks.proctree import TreeMonitor
from benchmarks.records import write_record

PEER = Path(os.environ.get("FLWR_PEER", "/work/shared/peers/flwr"))
PARTITION = {"iid": "iid", "noniid": "pathological:2"}


def _watch(path: Path, t0: float, seen: dict, mon: TreeMonitor, rounds: int) -> None:
    # metrics.jsonl is opened by rank 0 right before its first round: start-up ends there.
    # The tree's CPU is stamped when round 1's and the last round's evaluations appear, so
    # (last - first) / (rounds - 1) is the CPU of a round (training, aggregation, evaluation
    # and the launcher's wait), as Flower's tree CPU between its evaluations is.
    mon.exclude_this_thread()
    while "last" not in mon.marks and time.perf_counter() - t0 < 1800:
        if "t" not in seen and path.exists():
            seen["t"] = time.perf_counter() - t0
        if "t" in seen:
            n = path.read_text().count('"agent": "global"')
            if n >= 1 and "first" not in mon.marks:
                mon.mark("first")
            if n >= rounds:
                mon.mark("last")
        time.sleep(0.02)


def _launch(variant: str, rounds: int, out: Path, clients: int, fraction: float) -> dict:
    return ddla.launch(
        overrides=[
            "agents=2", "data.dataset=fashion-mnist", "model.name=mlp", "model.hidden=128",
            "sync.strategy=fedavg", f"fed.clients={clients}", f"fed.fraction={fraction}",
            "fed.epochs=1", "fed.batch=10", "optim.name=sgd", "optim.lr=0.05",
            "optim.momentum=0", "optim.schedule=constant",
            f"data.partition={PARTITION[variant]}", f"train.steps={rounds}",
            "train.eval_every=1", f"out={out}",
        ],
        progress=False,
    )  # fmt: skip


def run_ddla(
    variant: str, rounds: int, out: Path, clients: int = 100, fraction: float = 0.1
) -> dict:
    os.environ["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    seen: dict = {}
    mon = TreeMonitor(os.getpid())
    watcher = threading.Thread(
        target=_watch, args=(out / "metrics.jsonl", t0, seen, mon, rounds), daemon=True
    )
    with mon:
        watcher.start()
        summary = _launch(variant, rounds, out, clients, fraction)
        wall = time.perf_counter() - t0
        watcher.join(timeout=5)
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    glob = sorted((e for e in evals if e.get("agent") == "global"), key=lambda e: e["step"])
    times = [0.0] + [e["wall_s"] for e in glob]
    rs = [b - a for a, b in itertools.pairwise(times)]
    # Training CPU-seconds per round, summed over the agents (evaluation not included).
    per_agent = {}
    for e in evals:
        if isinstance(e.get("agent"), int):
            per_agent.setdefault(e["agent"], []).append((e["step"], e["train_cpu_s"]))
    deltas = [
        [b - a for a, b in itertools.pairwise([0.0] + [c for _, c in sorted(v)])]
        for v in per_agent.values()
    ]
    train_cpu = [sum(d[i] for d in deltas) for i in range(rounds)]
    accs = [e["accuracy"] for e in glob]
    return {
        "tool": "ddla", "variant": variant, "rounds": rounds, "clients": clients,
        "fraction": fraction,
        "median_round_s_excl_first": statistics.median(rs[1:]), "first_round_s": rs[0],
        "startup_s": seen.get("t"), "after_training_s": wall - seen.get("t", 0) - times[-1],
        "cpu_s_total": mon.cpu_s(), "train_cpu_s_per_round_excl_first": statistics.median(
            train_cpu[1:]),
        "tree_cpu_s_per_round_excl_first": (mon.marks["last"] - mon.marks["first"]) / (rounds - 1)
        if {"first", "last"} <= mon.marks.keys() else None,
        "peak_pss_mb_tree": mon.peak_pss_mb(),
        "total_wall_s": wall, "final_acc": accs[-1], "acc_curve": accs,
        "startup_phases_rank0": summary["time"].get("startup"),
        "bytes_per_round": statistics.median(h["bytes_sent"] for h in
                                             summary["federated"]["per_round"]),
    }  # fmt: skip


def run_flower(variant: str, rounds: int, out: Path, timeout_s: float = 900) -> dict:
    venv = os.environ.get("FLWR_VENV")
    if not venv:
        raise SystemExit("set FLWR_VENV to the venv ../shared/peers/flwr/setup.sh built")
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}  # fmt: skip
    path = out / f"flwr_{variant}.json"
    cmd = [f"{venv}/bin/python", str(PEER / "flwr_fedavg_fashion.py"), "--variant", variant,
           "--rounds", str(rounds), "--out", str(path)]  # fmt: skip
    # Flower's output goes to a file: a pipe nobody reads fills and blocks it. Under heavy load
    # its Ray raylet can die at start-up ("Timed out waiting for file .../metrics_agent_port"),
    # leaving the driver waiting forever: a timeout turns that into a recorded failure.
    log = out / f"flwr_{variant}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        deadline, usage = time.monotonic() + timeout_s, None
        mon = TreeMonitor(proc.pid).__enter__()  # the driver, its Ray GCS, raylet and workers
        while usage is None:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)  # the driver's own rusage
            if pid:
                usage, proc.returncode = ru, os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                os.killpg(proc.pid, 9)  # its own session: the driver and its Ray processes
                deadline = float("inf")
            else:
                time.sleep(0.2)
        mon.__exit__()
    if not path.exists():
        tail = log.read_text(errors="replace")[-400:]
        return {"failed": f"rc={proc.returncode} after <= {timeout_s} s; log tail: {tail}"}
    res = json.loads(path.read_text())
    res["peak_rss_mb_driver"] = usage.ru_maxrss / 1024
    res["peak_pss_mb_tree"], res["cpu_s_tree"] = mon.peak_pss_mb(), mon.cpu_s()
    return res


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--variants", default="iid,noniid")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--flower-timeout", type=float, default=300, help="seconds, then a failure row")
    p.add_argument("--scale", default="", help="CLIENTS:FRACTION,...: ddla alone at these scales")
    args = p.parse_args()
    results = []
    for spec in filter(None, args.scale.split(",")):
        # The memory goal: many more clients at a small fraction (Flower's simulation engine
        # keeps a Ray actor pool; ddla keeps no per-client state for fedavg).
        clients, fraction = spec.split(":")
        with tempfile.TemporaryDirectory(prefix="fed2-scale-") as tmp:
            d = run_ddla("iid", args.rounds, Path(tmp), int(clients), float(fraction))
        row = {"scale": spec, "loadavg": os.getloadavg(), **{f"ddla_{k}": x for k, x in d.items()}}
        results.append(row)
        print(json.dumps({k: x for k, x in row.items() if "curve" not in k}), flush=True)
    with tempfile.TemporaryDirectory(prefix="fed2-flower-") as tmp:
        variants = [v for v in filter(None, args.variants.split(",")) for _ in range(args.repeats)]
        for rep, v in enumerate(variants):
            # Alternate which tool goes first: the machine's load drifts.
            if rep % 2:
                f = run_flower(v, args.rounds, Path(tmp), args.flower_timeout)
                d = run_ddla(v, args.rounds, Path(tmp) / f"ddla-{v}-{rep}")
            else:
                d = run_ddla(v, args.rounds, Path(tmp) / f"ddla-{v}-{rep}")
                f = run_flower(v, args.rounds, Path(tmp), args.flower_timeout)
            if "failed" in f:
                row = {"variant": v, "flower_failed": f["failed"], "loadavg": os.getloadavg(),
                       **{f"ddla_{k}": x for k, x in d.items()}}  # fmt: skip
                results.append(row)
                print(json.dumps({k: x for k, x in row.items() if "curve" not in k}), flush=True)
                continue
            row = {
                "variant": v, "first": "flower" if rep % 2 else "ddla",
                "ddla_s_per_round": d["median_round_s_excl_first"],
                "flower_s_per_round": f["median_round_s_excl_first"],
                "speedup": f["median_round_s_excl_first"] / d["median_round_s_excl_first"],
                "ddla_startup_s": d["startup_s"],
                "ddla_startup_phases_rank0": d["startup_phases_rank0"],
                "flower_startup_s": f["startup_s_to_first_eval"],
                "ddla_train_cpu_s_per_round": d["train_cpu_s_per_round_excl_first"],
                "ddla_cpu_s_whole_run": d["cpu_s_total"],
                "ddla_after_training_s": d["after_training_s"],
                "flower_cpu_s_per_round": f["median_round_cpu_s_excl_first"],
                "ddla_tree_cpu_s_per_round": d["tree_cpu_s_per_round_excl_first"],
                "ddla_peak_pss_mb_tree": d["peak_pss_mb_tree"],
                "flower_peak_pss_mb_tree": f["peak_pss_mb_tree"],
                "flower_cpu_s_whole_run": f["cpu_s_tree"],
                "flower_peak_rss_mb_driver": f["peak_rss_mb_driver"],
                "ddla_final_acc": d["final_acc"], "flower_final_acc": f["final_acc"],
                "ddla_acc_curve": d["acc_curve"], "flower_acc_curve": f["acc_curve"],
                "ddla_bytes_per_round": d["bytes_per_round"],
                "loadavg": os.getloadavg(),
            }  # fmt: skip
            results.append(row)
            print(json.dumps({k: v for k, v in row.items() if "curve" not in k}), flush=True)
    path = write_record(
        "flower_side_by_side",
        config={"rounds": args.rounds, "clients": 100, "fraction": 0.1, "epochs": 1,
                "batch": 10, "lr": 0.05, "model": "mlp 784-128-128-10", "ddla_agents": 2,
                "flower": "flwr 1.41.0 simulation, Ray 2 CPUs, 1 CPU per ClientApp"},
        figures=results,
    )  # fmt: skip
    print(path)


if __name__ == "__main__":
    main()
