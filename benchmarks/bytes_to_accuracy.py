"""Bytes to accuracy: how many bytes each agent sends to reach a test accuracy, per strategy.

Fashion-MNIST, 4 agents, the zoo MLP, partitions ``iid`` and ``dirichlet:0.5``; strategies
``allreduce`` (the baseline), ``local_sgd``, ``diloco`` and ``streaming_diloco`` with fp32, int8
and int4, and a sweep of H. For each run: steps and bytes sent per agent to first reach the
target accuracy, final accuracy after the same sample budget (steps x batch x agents), wall
time. Writes a JSON record (config, git SHA, machine, command), a Markdown table and a plot
(accuracy vs bytes per agent, log x) under ``benchmarks/records/``.

All runs of one invocation share one set of 4 agent processes (real gloo process group, the
ddla training loop :func:`ddla.agent.train`), so process start-up and dataset loading are paid
once; every run starts from the same seeded initial model.

For ``local_sgd`` and ``diloco`` only evaluations at synchronization points (step % H == 0,
and the end) count toward "reached": in between, the agents' models differ and the evaluated
global model is an average that would cost an extra synchronization to obtain. Streaming
DiLoCo never has all fragments synchronized at once, so all its evaluations count (noted in
the record).

Usage::

    python benchmarks/bytes_to_accuracy.py                 # the recorded run: the full grid
    python benchmarks/bytes_to_accuracy.py --steps 200 --grid smoke   # a quick check
    python benchmarks/bytes_to_accuracy.py --seed 1 --only allreduce:fp32:1 diloco:int4:500

The last one repeats two runs with another seed; a run with ``--seed`` other than 0 or with
``--only`` writes its own record and run directories (``...-seed1``), never the main record's.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from bytes_to_accuracy_report import (
    analyse,
    analyse_recorded,
    goal,
    goal_lines,
    plot,
    run_name,
    table,
)
from records import git_sha, machine

from ddla.agent import train
from ddla.config import RunConfig
from ddla.job import job_from_config
from ddla.testing import run_agents

ROOT = Path(__file__).resolve().parent.parent
COMPRESS = {"fp32": "none", "int8": "int8", "int4": "int4"}
PERIODIC = ("local_sgd", "diloco", "streaming_diloco")


def grid(name: str, every: tuple[int, ...] = (10, 50, 100, 500)) -> list[dict[str, Any]]:
    """The (strategy, compress, H) combinations of a named grid, per partition."""
    runs: list[dict[str, Any]] = [
        {"strategy": "allreduce", "compress": c, "every": 1} for c in COMPRESS
    ]
    if name == "full":
        runs += [
            {"strategy": s, "compress": c, "every": h}
            for s in PERIODIC
            for c in COMPRESS
            for h in every
        ]
    elif name == "smoke":
        runs = [runs[0], {"strategy": "diloco", "compress": "int4", "every": 50}]
    else:
        raise SystemExit(f"unknown grid {name!r}: use full or smoke")
    return runs


def spec(run: dict[str, Any]) -> str:
    """``strategy:wire:H``, the name ``--only`` selects a run by (H is 1 for allreduce)."""
    return f"{run['strategy']}:{run['compress']}:{run['every']}"


def overrides(args: argparse.Namespace, partition: str, run: dict[str, Any]) -> list[str]:
    return [
        f"agents={args.agents}",
        "data.dataset=fashion-mnist",
        f"data.partition={partition}",
        f"data.batch_size={args.batch_size}",
        "model.name=mlp",
        f"optim.name={args.optim}",
        f"optim.lr={args.lr}",
        "optim.schedule=constant",  # as the recorded runs were measured
        f"model.hidden={args.hidden}",
        f"train.steps={args.steps}",
        f"train.eval_every={args.eval_every}",
        "train.eval_agents=false",
        f"train.seed={args.seed}",
        f"sync.strategy={run['strategy']}",
        f"sync.every={run['every']}",
        f"sync.compress={COMPRESS[run['compress']]}",
        f"sync.fragments={args.fragments}",
    ]


def _agent(transport: Any, plan: list[tuple[str, list[str]]]) -> None:
    """One agent: load the data once, then train every run of the plan in turn."""
    torch.set_num_threads(1)  # 4 agents share the machine's cores
    base = job_from_config(RunConfig.load(None, plan[0][1]))
    initial = copy.deepcopy(base.model.state_dict())
    for i, (out, ovr) in enumerate(plan, 1):
        started = time.perf_counter()
        config = RunConfig.load(None, [*ovr, f"out={out}"])
        model = copy.deepcopy(base.model)
        model.load_state_dict(initial)
        job = dataclasses.replace(base, model=model)
        transport.stats.reset()  # each run's summary counts only its own bytes
        train(job, config, transport, progress=False)
        if transport.rank == 0:  # one line per run: the sweep takes a while
            print(f"[{i}/{len(plan)}] {Path(out).name}: {time.perf_counter() - started:.0f} s",
                  flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grid", default="full", choices=["full", "smoke"])
    p.add_argument("--partitions", nargs="+", default=["iid", "dirichlet:0.5"])
    p.add_argument(
        "--only",
        nargs="+",
        metavar="STRATEGY:WIRE:H",
        help="run just these of the grid, e.g. allreduce:fp32:1 diloco:int4:500 (seed repeats)",
    )
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--steps", type=int, default=5000, help="steps per agent (the sample budget)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument(
        "--optim", default="adamw", help="every agent's (inner) optimizer, the same for all runs"
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, nargs="+", default=[10, 50, 100, 500], help="the H sweep")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--fragments", type=int, default=4)
    p.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=[0.88, 0.87, 0.85],
        help="test accuracies to reach",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", help="run directories (default runs/bytes_to_accuracy[-seedN])")
    p.add_argument("--record", help="record path without suffix (default: benchmarks/records/)")
    p.add_argument(
        "--analyse-only",
        action="store_true",
        help="re-analyse the run directories of the last invocation (e.g. other --targets; "
        "without them, the curves in its record) "
        "without training; the record keeps that invocation's command, SHA and timing",
    )
    args = p.parse_args(argv)
    variant = "" if args.seed == 0 and not args.only else f"-seed{args.seed}"
    args.work = args.work or f"runs/bytes_to_accuracy{variant}"
    args.record = args.record or str(ROOT / f"benchmarks/records/bytes_to_accuracy{variant}")

    plan, index = [], []
    work = Path(args.work).resolve()
    for part in args.partitions:
        for run in grid(args.grid, tuple(args.every)):
            if args.only and spec(run) not in args.only:
                continue
            out = work / run_name(part, run)
            if not args.analyse_only:
                out.mkdir(parents=True, exist_ok=True)
                (out / "metrics.jsonl").unlink(missing_ok=True)
            plan.append((str(out), overrides(args, part, run)))
            index.append((out, {"partition": part, **run}))
    rec = Path(args.record)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    if args.analyse_only:
        previous = json.loads(rec.with_suffix(".json").read_text())
        sha, elapsed, ran = previous["git_sha"], previous["elapsed_s"], previous["command"]
        host, date = previous["machine"], previous["date_utc"]
    else:
        sha = git_sha()  # the code that runs, before anything can change the checkout
        print(f"{len(plan)} runs x {args.steps} steps x {args.agents} agents at {sha}", flush=True)
        start = time.perf_counter()
        run_agents(_agent, args.agents, plan, timeout_s=6 * 3600)
        elapsed, ran, host = time.perf_counter() - start, command, machine()
        date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.analyse_only and not all((out / "metrics.jsonl").exists() for out, _ in index):
        # A fresh checkout: run directories are not in git, the record's curves are.
        print(f"no run directories under {work}: analysing the curves in {rec.name}.json")
        by_run = {run_name(r["partition"], r): r for r in previous["results"]}
        results = [
            analyse_recorded(by_run[run_name(run["partition"], run)], args.targets, args.agents)
            for _, run in index
        ]
    else:
        results = [analyse(out, run, args.targets, args.agents) for out, run in index]
    record = {
        "benchmark": "bytes_to_accuracy",
        "command": ran,
        "analysis_command": command,
        "git_sha": sha,
        "machine": host,
        "date_utc": date,
        "config": {k: v for k, v in vars(args).items() if k != "analyse_only"},
        "elapsed_s": round(elapsed, 1),
        "notes": "local_sgd/diloco: only evaluations at sync points count toward reaching the "
        "target; streaming_diloco and allreduce: every evaluation.",
        "goal": [v for t in args.targets for v in goal(results, t)],
        "results": results,
    }
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.with_suffix(".json").write_text(json.dumps(record, indent=1))
    md = table(results, args.targets) + "\n\nAgainst the goal:\n\n" + goal_lines(record["goal"])
    rec.with_suffix(".md").write_text(md + "\n")
    plot(results, rec.with_suffix(".png"))
    print(md)
    print(f"\n{len(plan)} runs in {elapsed:.0f} s; record: {rec.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
