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
from records import git_sha, machine

from ddla.agent import train
from ddla.config import RunConfig
from ddla.job import job_from_config
from ddla.testing import run_agents

ROOT = Path(__file__).resolve().parent.parent
COMPRESS = {"fp32": "none", "int8": "int8", "int4": "int4"}
PERIODIC = ("local_sgd", "diloco", "streaming_diloco")


def grid(name: str) -> list[dict[str, Any]]:
    """The (strategy, compress, H) combinations of a named grid, per partition."""
    runs: list[dict[str, Any]] = [
        {"strategy": "allreduce", "compress": c, "every": 1} for c in COMPRESS
    ]
    if name == "full":
        runs += [
            {"strategy": s, "compress": c, "every": h}
            for s in PERIODIC
            for c in COMPRESS
            for h in (10, 50, 100, 500)
        ]
    elif name == "smoke":
        runs = [runs[0], {"strategy": "diloco", "compress": "int4", "every": 50}]
    else:
        raise SystemExit(f"unknown grid {name!r}: use full or smoke")
    return runs


def run_name(partition: str, run: dict[str, Any]) -> str:
    h = "" if run["strategy"] == "allreduce" else f"-H{run['every']}"
    return f"{partition.replace(':', '')}-{run['strategy']}-{run['compress']}{h}"


def overrides(args: argparse.Namespace, partition: str, run: dict[str, Any]) -> list[str]:
    return [
        f"agents={args.agents}",
        "data.dataset=fashion-mnist",
        f"data.partition={partition}",
        f"data.batch_size={args.batch_size}",
        "model.name=mlp",
        f"optim.name={args.optim}",
        f"optim.lr={args.lr}",
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


def analyse(out: Path, run: dict[str, Any], targets: list[float], agents: int) -> dict[str, Any]:
    """Steps/bytes per agent to each target, final accuracy, wall time of one run directory."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["agent"] == "global"]
    summary = json.loads((out / "summary.json").read_text())
    last_step = rows[-1]["step"]
    periodic_sync_only = run["strategy"] in ("local_sgd", "diloco")
    to_target = {}
    for target in targets:
        reached = None
        for r in rows:
            synced = (
                not periodic_sync_only or r["step"] % run["every"] == 0 or r["step"] == last_step
            )
            if synced and r["accuracy"] >= target:
                reached = r
                break
        to_target[f"{target:g}"] = {
            "steps": reached["step"] if reached else None,
            "bytes_per_agent": reached["bytes_sent"] // agents if reached else None,
        }
    per_agent_sent = [a["bytes_sent"] for a in summary["comm"]["per_agent"]]
    return {
        **run,
        "to_target": to_target,
        "final_accuracy": summary["final"]["accuracy"],
        "best_accuracy": max(r["accuracy"] for r in rows),
        "bytes_per_agent": max(per_agent_sent),
        "wall_s": summary["time"]["wall_s"],
        "curve": [(r["step"], r["bytes_sent"] // agents, r["accuracy"]) for r in rows],
    }


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def table(results: list[dict[str, Any]], targets: list[float]) -> str:
    """Markdown table; ratios against allreduce fp32 of the same partition."""
    head = "| partition | strategy | wire | H |"
    for t in targets:
        head += f" steps to {t:.0%} | bytes/agent to {t:.0%} | × fewer than allreduce |"
    head += " final acc | Δ acc vs allreduce | bytes/agent (whole run) | wall s |"
    lines = [head, "|---" * (4 + 3 * len(targets) + 4) + "|"]
    base = {
        r["partition"]: r
        for r in results
        if r["strategy"] == "allreduce" and r["compress"] == "fp32"
    }
    for r in results:
        b = base.get(r["partition"])
        h = "—" if r["strategy"] == "allreduce" else str(r["every"])
        line = f"| {r['partition']} | {r['strategy']} | {r['compress']} | {h} |"
        for t in targets:
            mine = r["to_target"][f"{t:g}"]
            ref = b["to_target"][f"{t:g}"] if b else {"bytes_per_agent": None}
            ratio = "—"
            if ref["bytes_per_agent"] and mine["bytes_per_agent"]:
                ratio = f"{ref['bytes_per_agent'] / mine['bytes_per_agent']:,.0f}"
            line += f" {mine['steps'] or 'not reached'} | {fmt_bytes(mine['bytes_per_agent'])} |"
            line += f" {ratio} |"
        delta = f"{100 * (r['final_accuracy'] - b['final_accuracy']):+.2f}" if b else "—"
        line += f" {100 * r['final_accuracy']:.2f} | {delta} | {fmt_bytes(r['bytes_per_agent'])}"
        line += f" | {r['wall_s']:.0f} |"
        lines.append(line)
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], targets: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    partitions = sorted({r["partition"] for r in results})
    fig, axes = plt.subplots(1, len(partitions), figsize=(7 * len(partitions), 5), squeeze=False)
    styles = {"allreduce": "-", "local_sgd": ":", "diloco": "-.", "streaming_diloco": "--"}
    for ax, part in zip(axes[0], partitions, strict=True):
        for r in results:
            if r["partition"] != part:
                continue
            pts = [(b, a) for _, b, a in r["curve"] if b > 0]
            if not pts:
                continue
            h = "" if r["strategy"] == "allreduce" else f" H={r['every']}"
            ax.plot(
                *zip(*pts, strict=True),
                styles[r["strategy"]],
                label=f"{r['strategy']} {r['compress']}{h}",
            )
        for t in targets:
            ax.axhline(t, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("bytes sent per agent")
        ax.set_ylabel("test accuracy (global model)")
        ax.set_title(f"Fashion-MNIST, MLP, 4 agents, {part}")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grid", default="full", choices=["full", "smoke"])
    p.add_argument("--partitions", nargs="+", default=["iid", "dirichlet:0.5"])
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--steps", type=int, default=5000, help="steps per agent (the sample budget)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument(
        "--optim", default="adamw", help="every agent's (inner) optimizer, the same for all runs"
    )
    p.add_argument("--lr", type=float, default=1e-3)
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
    p.add_argument("--work", default="runs/bytes_to_accuracy", help="run directories")
    p.add_argument("--record", default=str(ROOT / "benchmarks/records/bytes_to_accuracy"))
    p.add_argument(
        "--analyse-only",
        action="store_true",
        help="re-analyse the run directories of the last invocation (e.g. other --targets) "
        "without training; the record keeps that invocation's command, SHA and timing",
    )
    args = p.parse_args(argv)

    plan, index = [], []
    work = Path(args.work).resolve()
    for part in args.partitions:
        for run in grid(args.grid):
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
        "results": results,
    }
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.with_suffix(".json").write_text(json.dumps(record, indent=1))
    md = table(results, args.targets)
    rec.with_suffix(".md").write_text(md + "\n")
    plot(results, args.targets, rec.with_suffix(".png"))
    print(md)
    print(f"\n{len(plan)} runs in {elapsed:.0f} s; record: {rec.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
