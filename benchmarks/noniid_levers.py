"""Non-IID levers: which DiLoCo settings close the gap to ``allreduce`` on ``dirichlet:0.5``.

The workload of ``bytes_to_accuracy.py`` (4 agents, Fashion-MNIST, the zoo MLP hidden 256,
AdamW lr 1e-3, batch 64, 5000 steps, evaluation every 100 steps, the same seeded initial model
for every run) on one partition and seed; every run is a spec ``STRATEGY:WIRE:H`` plus
``--set``-style overrides after commas, e.g.::

    diloco:int4:100                              # the recorded baseline
    diloco:int4:100,sync.outer_lr=1.0            # an outer learning rate for skew
    diloco:sign:100,sync.drift=scaffold          # drift correction + 1-bit codes

``WIRE`` is any ``sync.compress`` spec (``int4``, ``int4:1024``, ``sign:1024``, ...). The first
run must be ``allreduce:none:1``: every ratio is against it, measured in the same invocation.
For ``diloco`` only evaluations at sync points count toward "reached" (as in
``bytes_to_accuracy.py``). ``--baseline RECORD`` takes the allreduce run from an earlier record
of this script or of ``bytes_to_accuracy.py`` (same seed and partition) instead, for quick lever
screens; the recorded tables in docs/benchmarks.md run it side by side. Writes
``benchmarks/records/noniid_levers-seedN-<stamp>.json`` (and ``-latest``) through
``records.py`` and prints the Markdown table.

Usage::

    python benchmarks/noniid_levers.py --seed 1 allreduce:none:1 diloco:int4:100 \\
        diloco:int4:100,sync.outer_lr=1.0
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bytes_to_accuracy import _agent
from bytes_to_accuracy_report import analyse, fmt_bytes
from records import git_sha, write_record

from ddla.testing import run_agents

GOAL_RATIO, GOAL_POINTS = 1000, 1.0


def parse(text: str) -> dict[str, Any]:
    """``STRATEGY:WIRE:H[,k=v...]`` -> the run (strategy, compress, every, extra overrides)."""
    head, *extra = text.split(",")
    strategy, _, rest = head.partition(":")
    wire, _, every = rest.rpartition(":")
    if not (strategy and wire and every.isdigit()):
        raise SystemExit(f"cannot read run {text!r}: write STRATEGY:WIRE:H[,key=value...]")
    return {"spec": text, "strategy": strategy, "compress": wire, "every": int(every),
            "extra": extra}  # fmt: skip


def overrides(args: argparse.Namespace, run: dict[str, Any]) -> list[str]:
    return [
        "agents=4",
        "data.dataset=fashion-mnist",
        f"data.partition={args.partition}",
        "data.batch_size=64",
        "model.name=mlp",
        "model.hidden=256",
        "optim.name=adamw",
        "optim.lr=0.001",
        "optim.schedule=constant",
        f"train.steps={args.steps}",
        "train.eval_every=100",
        "train.eval_agents=false",
        f"train.seed={args.seed}",
        f"sync.strategy={run['strategy']}",
        f"sync.every={run['every']}",
        f"sync.compress={run['compress']}",
        "comm.timeout_s=1800",  # a 2-core machine shared by many: slow peers, not lost ones
        *run["extra"],
    ]


def dirname(spec: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)


def row(r: dict[str, Any], base: dict[str, Any], target: str) -> str:
    mine, ref = r["to_target"][target], base["to_target"][target]
    ratio = ref["bytes_per_agent"] / mine["bytes_per_agent"] if mine["bytes_per_agent"] else None
    delta = 100 * (r["final_accuracy"] - base["final_accuracy"])
    met = bool(ratio and ratio >= GOAL_RATIO and delta >= -GOAL_POINTS)
    r.update(ratio=ratio, delta_points=delta, met=met)
    return (
        f"| `{r['spec']}` | {mine['steps'] or 'not reached'} | {fmt_bytes(mine['bytes_per_agent'])}"
        f" | {f'{ratio:,.0f}' if ratio else '—'} | {100 * r['final_accuracy']:.2f} | "
        f"{delta:+.2f} | {fmt_bytes(r['bytes_per_agent'])} | {'yes' if met else 'no'} |"
    )


def curve(out: Path) -> list[tuple[int, int, float]]:
    """(step, bytes per agent, accuracy) of every global evaluation a run directory holds."""
    path = out / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [
        (r["step"], r["bytes_sent"] // 4, r["accuracy"]) for r in rows if r["agent"] == "global"
    ]


def recorded_baseline(args: argparse.Namespace) -> dict[str, Any]:
    """The allreduce fp32 result of this seed and partition from a record of either script."""
    record = json.loads(Path(args.baseline).read_text())
    seed = record["config"]["seed"]
    results = record.get("results") or record["figures"]["results"]
    for r in results:
        baseline = r["strategy"] == "allreduce" and r["compress"] in ("fp32", "none")
        if baseline and r["partition"] == args.partition and seed == args.seed:
            return {**r, "spec": f"allreduce:none:1 (recorded, {args.baseline})"}
    raise SystemExit(f"{args.baseline} holds no allreduce run of seed {args.seed} on "
                     f"{args.partition}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="STRATEGY:WIRE:H[,key=value...]; first allreduce")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--partition", default="dirichlet:0.5")
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--target", type=float, default=0.88)
    p.add_argument("--work", default="runs/noniid_levers")
    p.add_argument("--name", default="noniid_levers", help="record name (-seedN is appended)")
    p.add_argument("--baseline", help="a record holding this seed's allreduce run (no rerun)")
    p.add_argument(
        "--analyse-only",
        action="store_true",
        help="record the run directories already under --work without training; a run that "
        "was stopped (no summary.json) is recorded as stopped, with its curve so far",
    )
    args = p.parse_args(argv)
    runs = [parse(t) for t in args.runs]
    recorded = recorded_baseline(args) if args.baseline else None
    if recorded is None and (runs[0]["strategy"] != "allreduce" or runs[0]["compress"] != "none"):
        raise SystemExit("the first run must be allreduce:none:1 (the baseline of every ratio)")
    work = Path(args.work).resolve() / f"seed{args.seed}"
    plan = []
    for run in runs:
        out = work / dirname(run["spec"])
        if not args.analyse_only:
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.jsonl").unlink(missing_ok=True)
        plan.append((str(out), overrides(args, run)))
    sha = git_sha()
    print(f"{len(plan)} runs, seed {args.seed}, {args.partition} at {sha}", flush=True)
    start = time.perf_counter()
    if not args.analyse_only:
        run_agents(_agent, 4, plan, timeout_s=6 * 3600)
    elapsed = time.perf_counter() - start
    target = f"{args.target:g}"
    results, stopped = [], []
    for run, (out, _) in zip(runs, plan, strict=True):
        meta = {"partition": args.partition, "strategy": run["strategy"],
                "compress": run["compress"], "every": run["every"]}  # fmt: skip
        if not (Path(out) / "summary.json").exists():
            stopped.append({"spec": run["spec"], **meta, "curve": curve(Path(out))})
            continue
        results.append({"spec": run["spec"], **analyse(Path(out), meta, [args.target], 4)})
    if recorded is not None:
        results.insert(0, recorded)
    base = results[0]
    lines = [
        f"| run | step to {args.target:.0%} | bytes/agent to it | × fewer than allreduce | "
        "final acc | Δ vs allreduce | bytes/agent (run) | goal |",
        "|---|---|---|---|---|---|---|---|",
        *[row(r, base, target) for r in results],
        *[
            f"| `{r['spec']}` | stopped at step {r['curve'][-1][0] if r['curve'] else 0}: "
            f"{100 * r['curve'][-1][2] if r['curve'] else 0:.2f}% there | | | | | | no |"
            for r in stopped
        ],
    ]
    md = "\n".join(lines)
    name = f"{args.name}-seed{args.seed}"
    path = write_record(
        name,
        config={**vars(args), "workload": overrides(args, runs[0])[:13], "git_sha_run": sha},
        figures={
            "elapsed_s": round(elapsed, 1),
            "table": md,
            "results": results,
            "stopped": stopped,
        },
    )
    print(md)
    print(f"\n{len(plan)} runs in {elapsed:.0f} s; record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
