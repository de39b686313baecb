"""DiLoCo on a language model: validation loss and bytes per agent against data-parallel.

4 agents, the built-in ``python-stdlib`` byte corpus (contiguous documents per agent: the
non-i.i.d. split of text across data owners), the zoo ``gpt``; every run trains the same
token budget (steps x batch x context x agents) from the same seeded initial model with the
same inner AdamW. Runs: ``allreduce`` (data-parallel, the baseline), ``diloco`` with
H in {50, 100, 500} in fp32 and int4, and ``streaming_diloco`` (H=100, 4 fragments). For each:
final validation loss and perplexity of the merged model, bytes sent per agent, and bytes per
agent to first reach the ``allreduce`` run's final validation loss (DiLoCo: only evaluations
at sync points count, since in between the evaluated average would cost an extra sync).

All runs of one invocation share one set of agent processes (real gloo process group, the
ddla training loop :func:`ddla.agent.train`), so start-up and corpus loading are paid once.

Usage::

    nice -n 10 python benchmarks/lm_diloco.py                  # the recorded run
    nice -n 10 python benchmarks/lm_diloco.py --steps 100 --only allreduce:fp32:1 diloco:int4:50

Writes ``benchmarks/records/lm_diloco.{json,md}`` (config, git SHA, machine, command, corpus
SHA-256, figures); a run with ``--only`` writes ``lm_diloco-only.*`` instead.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
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
COMPRESS = {"fp32": "none", "int4": "int4"}


def grid(every: list[int], stream_every: int) -> list[dict[str, Any]]:
    runs = [{"strategy": "allreduce", "compress": "fp32", "every": 1}]
    runs += [{"strategy": "diloco", "compress": c, "every": h} for h in every for c in COMPRESS]
    runs.append({"strategy": "streaming_diloco", "compress": "fp32", "every": stream_every})
    return runs


def spec(run: dict[str, Any]) -> str:
    return f"{run['strategy']}:{run['compress']}:{run['every']}"


def overrides(args: argparse.Namespace, run: dict[str, Any]) -> list[str]:
    return [
        f"agents={args.agents}",
        "data.dataset=python-stdlib",
        "data.partition=contiguous",
        f"data.context={args.context}",
        f"data.size={args.size}",
        f"data.batch_size={args.batch_size}",
        "model.name=gpt",
        f"model.hidden={args.hidden}",
        f"model.layers={args.layers}",
        f"model.heads={args.heads}",
        "optim.name=adamw",
        f"optim.lr={args.lr}",
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
    """One agent: load the corpus once, then train every run of the plan in turn."""
    torch.set_num_threads(1)  # the agents share the machine's cores
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
        if transport.rank == 0:
            print(f"[{i}/{len(plan)}] {Path(out).name}: {time.perf_counter() - started:.0f} s",
                  flush=True)  # fmt: skip


def analyse(out: Path, run: dict[str, Any], agents: int) -> dict[str, Any]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["agent"] == "global"]
    summary = json.loads((out / "summary.json").read_text())
    last = rows[-1]["step"]
    sync_only = run["strategy"] == "diloco"
    return {
        **run,
        "final_loss": summary["final"]["loss"],
        "final_perplexity": summary["final"]["perplexity"],
        "final_accuracy": summary["final"]["accuracy"],
        "bytes_per_agent": max(a["bytes_sent"] for a in summary["comm"]["per_agent"]),
        "tokens_per_s": summary["throughput"]["tokens_per_s"],
        "wall_s": summary["time"]["wall_s"],
        "curve": [
            (r["step"], r["bytes_sent"] // agents, r["loss"])
            for r in rows
            if not sync_only or r["step"] % run["every"] == 0 or r["step"] == last
        ],
        "corpus_sha256": summary["data_info"]["sha256"],
    }


def to_target(result: dict[str, Any], target: float) -> dict[str, Any] | None:
    for step, sent, loss in result["curve"]:
        if loss <= target:
            return {"step": step, "bytes_per_agent": sent}
    return None


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _where(hit: dict[str, Any] | None) -> str:
    return f"step {hit['step']}, {fmt_bytes(hit['bytes_per_agent'])}" if hit else "no"


def _times(num: float, den: float | None) -> str:
    return f"{num / den:,.0f}x" if den else "—"


def table(results: list[dict[str, Any]]) -> str:
    base = results[0]
    lines = [
        "| run | H | wire | final val. loss | ppl | ppl vs allreduce | bytes/agent | "
        "reaches allreduce's final loss | fewer bytes to it | allreduce reached this loss at "
        "| fewer bytes than allreduce to this loss | tokens/s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        hit, back = r["to_allreduce_loss"], r["allreduce_to_this_loss"]
        back_ratio = _times(back["bytes_per_agent"], r["bytes_per_agent"]) if back else "—"
        lines.append(
            f"| {r['strategy']} | {r['every']} | {r['compress']} | {r['final_loss']:.4f} | "
            f"{r['final_perplexity']:.3f} | "
            f"{100 * (r['final_perplexity'] / base['final_perplexity'] - 1):+.1f}% | "
            f"{fmt_bytes(r['bytes_per_agent'])} | {_where(hit)} | "
            f"{_times(base['bytes_per_agent'], hit and hit['bytes_per_agent'])} | "
            f"{_where(back)} | {back_ratio} | "
            f"{r['tokens_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--steps", type=int, default=1000, help="steps per agent (the token budget)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per agent per step")
    p.add_argument(
        "--size",
        type=int,
        default=12000,
        help="windows kept (train + validation, per document); keeps evaluation affordable",
    )
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3, help="inner AdamW learning rate")
    p.add_argument("--every", type=int, nargs="+", default=[50, 100, 500], help="DiLoCo H")
    p.add_argument("--stream-every", type=int, default=100, help="streaming DiLoCo H")
    p.add_argument("--fragments", type=int, default=4)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", metavar="STRATEGY:WIRE:H")
    p.add_argument("--work", default="runs/lm_diloco")
    p.add_argument(
        "--analyse-only",
        action="store_true",
        help="re-analyse the run directories of the last invocation without training; the "
        "record keeps that invocation's command, SHA, machine and timing",
    )
    args = p.parse_args(argv)
    runs = [r for r in grid(args.every, args.stream_every) if not args.only or spec(r) in args.only]
    if not runs or runs[0]["strategy"] != "allreduce":
        raise SystemExit("the allreduce baseline (allreduce:fp32:1) must be among the runs")
    work = Path(args.work).resolve()
    plan, index = [], []
    for run in runs:
        out = work / spec(run).replace(":", "-")
        if not args.analyse_only:
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.jsonl").unlink(missing_ok=True)
        plan.append((str(out), overrides(args, run)))
        index.append((out, run))
    name = "lm_diloco" + ("-only" if args.only else "")
    rec = ROOT / "benchmarks" / "records" / name
    tokens = args.steps * args.batch_size * args.context * args.agents
    command = " ".join([Path(sys.executable).name, *sys.argv])
    if args.analyse_only:
        previous = json.loads(rec.with_suffix(".json").read_text())
        sha, elapsed, ran = previous["git_sha"], previous["elapsed_s"], previous["command"]
        host, date = previous["machine"], previous["date_utc"]
    else:
        sha = git_sha()  # the code that runs, before anything can change the checkout
        print(f"{len(plan)} runs x {args.steps} steps x {args.agents} agents ({tokens:,} tokens "
              f"each) at {sha}", flush=True)  # fmt: skip
        start = time.perf_counter()
        run_agents(_agent, args.agents, plan, timeout_s=6 * 3600)
        elapsed, ran, host = time.perf_counter() - start, command, machine()
        date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results = [analyse(out, run, args.agents) for out, run in index]
    target = results[0]["final_loss"]
    for r in results:
        r["to_allreduce_loss"] = to_target(r, target)
        r["allreduce_to_this_loss"] = to_target(results[0], r["final_loss"])
    cfg = RunConfig.load(None, plan[0][1])
    params = sum(p.numel() for p in job_from_config(cfg).model.parameters())
    record = {
        "benchmark": "lm_diloco",
        "command": ran,
        "analysis_command": command,
        "git_sha": sha,
        "machine": host,
        "date_utc": date,
        "config": {k: v for k, v in vars(args).items() if k != "analyse_only"},
        "model_parameters": params,
        "token_budget": tokens,
        "corpus": {"name": "python-stdlib", "sha256": results[0]["corpus_sha256"]},
        "target_loss": target,
        "elapsed_s": round(elapsed, 1),
        "notes": "diloco: only evaluations at sync points count toward reaching the target; "
        "allreduce and streaming_diloco: every evaluation. allreduce_to_this_loss: the first "
        "allreduce evaluation at or below this run's final loss. Loss in nats per byte; "
        f"bits per byte = loss / ln 2 (allreduce: {target / math.log(2):.3f}).",
        "results": results,
    }
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.with_suffix(".json").write_text(json.dumps(record, indent=1))
    md = table(results)
    rec.with_suffix(".md").write_text(md + "\n")
    print(md)
    print(f"\n{len(plan)} runs in {elapsed:.0f} s; {params:,} parameters; record: "
          f"{rec.with_suffix('.json')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
