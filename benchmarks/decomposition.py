"""Model decomposition on Fashion-MNIST: pipeline stages, tensor parallelism, hybrids (issue 12).

One invocation runs every layout side by side on the same deep MLP (``model.depth=8``, width
784: nine Linear layers, eight of them 784 x 784, 4.93 M parameters; chosen so that no layer
dominates and whole-layer stages can reach 1/S of the memory) and the same sample budget, through
``ddla.testing.run_agents`` (real gloo agents, one spawn per agent count):

- 1 agent (the whole model);
- 2 and 4 pipeline stages, GPipe with M in {1, 4, 8} microbatches and 1F1B with M in {4, 8}
  (1F1B needs M >= S);
- tensor parallel T=2, and 2 stages x 2 shards (each stage's pairs split over 2 agents);
- 2 replicas x 2 stages, with ``allreduce`` and with ``diloco``.

For each: samples/s, per-agent parameter + optimizer-state bytes (largest agent, and against
the single agent's), the measured bubble (mean idle share of a stage's step time) next to
(S-1)/(M+S-1), training bytes per step by kind (activations, activation gradients, the rest:
tensor-parallel or replica sync), accuracy after the budget, and the step time with emulated
``dc`` and ``wan`` links: a short run per link on the ``virtual-cpu`` clock (this process's CPU
seconds plus the Transport's modelled link seconds, so the figure does not move with the
shared machine's load; it leaves out time blocked waiting on a peer, i.e. the bubble, which
is measured separately on the real clock). The Transport charges each send and receive in
full when it completes (no overlap credited), so ``wan`` figures are an upper bound.

    nice -n 10 python benchmarks/decomposition.py          # everything (~30 min, 2 loaded cores)
    nice -n 10 python benchmarks/decomposition.py --samples 3200 --link-steps 4   # a quick look
    python benchmarks/decomposition.py --table benchmarks/records/decomposition-latest.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from records import write_record

BATCH = 64
BASE = [
    "data.dataset=fashion-mnist",
    "data.partition=iid",
    f"data.batch_size={BATCH}",
    "model.name=mlp",
    "model.depth=8",
    # Width 784 = the input's, so the first Linear is the size of every hidden one: eight
    # equal 784x784 layers (+ a 784x10 head), which whole-layer stages can balance at S=2
    # and 4 (a narrower MLP's first layer, 784 x width, dominates and bounds S=4's memory).
    "model.hidden=784",
    # AdamW for every layout (DiLoCo's inner optimizer too), so state bytes compare alike;
    # plain SGD barely moves a 9-layer ReLU MLP in this budget.
    "optim.name=adamw",
    "optim.lr=0.001",
    "optim.schedule=constant",
    "train.eval_every=0",
    "train.eval_agents=false",
]

#: name -> (agents, overrides)
LAYOUTS: dict[str, tuple[int, list[str]]] = {"single": (1, [])}
for _s in (2, 4):
    for _sched, _ms in (("gpipe", (1, 4, 8)), ("1f1b", (4, 8))):
        for _m in _ms:
            LAYOUTS[f"pp{_s}-{_sched}-m{_m}"] = (
                _s, [f"model.stages={_s}", f"model.schedule={_sched}", f"model.microbatches={_m}"]
            )  # fmt: skip
LAYOUTS["tp2"] = (2, ["model.tensor_parallel=2"])
LAYOUTS["pp2xtp2"] = (
    4, ["model.stages=2", "model.tensor_parallel=2", "model.microbatches=4", "model.schedule=1f1b"]
)  # fmt: skip
LAYOUTS["dp2xpp2-allreduce"] = (
    4, ["model.stages=2", "model.microbatches=4", "sync.strategy=allreduce"]
)  # fmt: skip
LAYOUTS["dp2xpp2-diloco"] = (
    4, ["model.stages=2", "model.microbatches=4", "sync.strategy=diloco", "sync.every=10"]
)  # fmt: skip


def _config(out: Path, agents: int, overrides: list[str], steps: int, link: str | None):
    from ddla.config import RunConfig

    extra = [f"agents={agents}", f"train.steps={steps}", f"out={out}"]
    if link is not None:  # evaluate every 2 steps: the step time leaves out the first two
        extra += [f"comm.link={link}", "comm.clock=virtual-cpu", "train.eval_every=2"]
    return RunConfig.load(None, [*BASE, *overrides, *extra])


def _agent(transport, work: str, runs: list[tuple[str, list[str], int, str | None]]) -> list:
    """One agent of every run of one agent count, one after another in the same processes
    (what ``ddla.launch`` does per run, less starting processes and importing torch each
    time: minutes per run on this loaded machine)."""
    from ddla.agent import train
    from ddla.job import job_from_config

    summaries = []
    for name, overrides, steps, link in runs:
        config = _config(Path(work) / name, transport.world_size, overrides, steps, link)
        transport.stats.reset()
        transport.emulate_links(config.comm.link, clock=config.comm.clock)
        summaries.append(train(job_from_config(config), config, transport, progress=False))
    return summaries


def _step_s(out: Path, steps: int) -> float:
    """Seconds per step between step 2 and the last (the slowest agent's time in steps; the
    first steps pay one-off set-up), from the run's global metrics rows."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_s = {r["step"]: r["train_s"] for r in rows if r["agent"] == "global"}
    return (train_s[steps] - train_s[2]) / (steps - 2)


def _row(name: str, summary: dict[str, Any], steps: int, single_bytes: int | None) -> dict:
    dec = summary.get("decomposition", {})
    agents = dec.get("agents") or []
    s, m = dec.get("stages", 1), dec.get("microbatches", 1)
    state = [a["parameter_bytes"] + a["optimizer_bytes"] for a in agents]
    idle = [a["idle_fraction"] for a in agents if a.get("idle_fraction") is not None]
    act = sum(a.get("pipeline_bytes_sent", {}).get("activations", 0) for a in agents)
    grad = sum(a.get("pipeline_bytes_sent", {}).get("gradients", 0) for a in agents)
    total = summary["comm"]["bytes_sent"]
    row = {
        "layout": name,
        "agents": summary["agents"],
        "samples_per_s": round(summary["throughput"]["samples_per_s"], 1),
        "accuracy": round(summary["final"]["accuracy"], 4),
        "max_agent_state_bytes": max(state) if state else None,
        "state_vs_single": round(max(state) / single_bytes, 3) if state and single_bytes else None,
        "ideal_state_vs_single": round(1 / (s * dec.get("tensor_parallel", 1)), 3),
        "bubble_measured": round(sum(idle) / len(idle), 3) if idle else None,
        "bubble_ideal": round((s - 1) / (m + s - 1), 3) if s > 1 else None,
        "bytes_per_step": {
            "activations": act // steps,
            "activation_grads": grad // steps,
            "sync_or_tp": (total - act - grad) // steps,
        },
    }
    return row


def table(figures: list[dict[str, Any]]) -> str:
    """The record's figures as the markdown table of docs/benchmarks.md."""
    head = (
        "| layout | agents | samples/s | accuracy | state / single | bubble (ideal) "
        "| act. B/step | act. grad B/step | sync/TP B/step | step ms: none (CPU) | dc | wan |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in figures:
        b = r["bytes_per_step"]
        bubble = (
            f"{r['bubble_measured']:.2f} ({r['bubble_ideal']:.2f})"
            if r["bubble_measured"] is not None
            else "-"
        )
        lines.append(
            f"| {r['layout']} | {r['agents']} | {r['samples_per_s']:.0f} | {r['accuracy']:.4f} "
            f"| {r['state_vs_single']:.3f} (1/{round(1 / r['ideal_state_vs_single'])}) "
            f"| {bubble} | {b['activations']:,} | {b['activation_grads']:,} "
            f"| {b['sync_or_tp']:,} | {1000 * r['step_cpu_s_nolink']:.1f} "
            f"| {1000 * r['step_s_dc']:.1f} | {1000 * r['step_s_wan']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=9600, help="training samples per run")
    parser.add_argument("--link-steps", type=int, default=8, help="steps of each link run")
    parser.add_argument("--only", nargs="+", choices=sorted(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--table", type=Path, help="print a record's markdown table and exit")
    args = parser.parse_args(argv)
    if args.table is not None:
        print(table(json.loads(args.table.read_text())["figures"]))
        return 0
    # One intra-op thread per agent in every layout (the agents inherit it), so the single
    # agent is not given more cores than each stage: on a shared machine spare threads spin.
    os.environ["OMP_NUM_THREADS"] = "1"
    work = Path(tempfile.mkdtemp(prefix="ddla-decomposition-"))
    from ddla.testing import run_agents

    by_world: dict[int, list[tuple[str, list[str], int, str | None]]] = {}
    for name in args.only:
        agents, overrides = LAYOUTS[name]
        steps = args.samples // (BATCH * (2 if name.startswith("dp2") else 1))
        by_world.setdefault(agents, []).extend(
            [(name, overrides, steps, None)]
            + [(f"{name}-{link}", overrides, args.link_steps, link) for link in ("dc", "wan")]
        )
    done: dict[str, dict] = {}
    for world, runs in sorted(by_world.items()):
        summaries = run_agents(_agent, world, str(work), runs, timeout_s=3600)[0]
        done.update({run[0]: summary for run, summary in zip(runs, summaries, strict=True)})
    rows, single_bytes = [], None
    for name in args.only:
        agents, overrides = LAYOUTS[name]
        steps = args.samples // (BATCH * (2 if name.startswith("dp2") else 1))
        summary = done[name]
        row = _row(name, summary, steps, single_bytes)
        if name == "single":
            single_bytes = row["max_agent_state_bytes"]
            row["state_vs_single"] = 1.0
        for link in ("dc", "wan"):
            row[f"step_s_{link}"] = round(_step_s(work / f"{name}-{link}", args.link_steps), 4)
        row["step_s_nolink"] = round(summary["time"]["train_s"] / steps, 4)
        cpu = max(a["train_cpu_s"] for a in summary["comm"]["per_agent"])
        row["step_cpu_s_nolink"] = round(cpu / steps, 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    path = write_record(
        "decomposition",
        config={"base": BASE, "samples": args.samples, "link_steps": args.link_steps,
                "layouts": {n: LAYOUTS[n] for n in args.only}},
        figures=rows,
    )  # fmt: skip
    print(f"record: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
