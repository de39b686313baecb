"""What ``--profile`` costs while it records: the same run with profiling off and on.

Both sides are real ``ddla.launch`` runs on the same data, model, batches and steps; rounds
alternate (off, on, on, off, ...) so machine noise hits both alike. Per strategy, ratios
on / off of time inside training steps per step (slowest agent): wall (median over rounds) and
CPU seconds of the agent process (insensitive to other processes). The window covers every
step, so every step pays the profiler and ddla's spans; stopping the profiler and writing the
traces happen after the last step, outside the step timing, and are shown apart (export_s).

    python benchmarks/profile_overhead.py --agents 2 --steps 200 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from alternate import alternate
from records import write_record
from rich.console import Console
from rich.table import Table

import ddla
from ddla.config import RunConfig


def run(config: RunConfig) -> tuple[float, float, float | None]:
    """(wall s, CPU s) inside steps of the slowest agent, and rank 0's export seconds."""
    summary = ddla.launch(config=config, progress=False, force=True, report=False)
    agents = summary["comm"]["per_agent"]
    trace = Path(config.out) / "profile" / "agent0.json"
    export = json.loads(trace.read_text())["ddla"]["export_s"] if trace.is_file() else None
    return max(a["train_s"] for a in agents), max(a["train_cpu_s"] for a in agents), export


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--strategies", nargs="+", default=["allreduce", "diloco"])
    parser.add_argument("--dataset", default="digits")
    args = parser.parse_args()
    console, figures = Console(), []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in args.strategies:
            base = [
                f"agents={args.agents}", f"data.dataset={args.dataset}", "model.hidden=64",
                f"sync.strategy={strategy}", f"train.steps={args.steps}", "train.eval_every=0",
                "train.eval_agents=false", "optim.schedule=constant", f"out={tmp}/run",
            ]  # fmt: skip
            configs = {
                "off": RunConfig.load(None, base),
                "on": RunConfig.load(None, [*base, f"profile.steps=0:{args.steps}"]),
            }
            exports: list[float] = []

            def measure(side: str, configs=configs, exports=exports) -> tuple[float, float]:
                w, c, e = run(configs[side])
                if side == "on" and e is not None:
                    exports.append(e)
                return w, c

            timed = alternate(
                ("off", "on"),
                rounds=args.rounds,
                steps=args.steps,
                measure=measure,
                report=lambda r, side, w, c, strategy=strategy: console.print(
                    f"{strategy} round={r} profile {side}: {w:.3f} ms/step wall, "
                    f"{c:.3f} ms/step cpu"
                ),
            )
            wall, cpu = timed.wall, timed.cpu
            figures.append({
                "strategy": strategy, "agents": args.agents,
                "off_ms_per_step": round(timed.median("wall", "off"), 4),
                "on_ms_per_step": round(timed.median("wall", "on"), 4),
                "wall_ratio": round(timed.ratio("wall"), 4),
                "off_cpu_ms_per_step": round(timed.median("cpu", "off"), 4),
                "on_cpu_ms_per_step": round(timed.median("cpu", "on"), 4),
                "cpu_ratio": round(timed.ratio("cpu"), 4),
                "export_s": statistics.median(exports) if exports else None,
                "rounds_wall_ms": wall, "rounds_cpu_ms": cpu,
            })  # fmt: skip
    table = Table(title="--profile on vs off (median of alternating rounds)")
    for col in ("strategy", "off ms/step", "on ms/step", "wall ratio", "cpu ratio", "export s"):
        table.add_column(col, justify="right")
    for f in figures:
        table.add_row(
            f["strategy"], f"{f['off_ms_per_step']:.3f}", f"{f['on_ms_per_step']:.3f}",
            f"{f['wall_ratio']:.3f}", f"{f['cpu_ratio']:.3f}", f"{f['export_s']}",
        )  # fmt: skip
    console.print(table)
    console.print(f"record: {write_record('profile_overhead', config=vars(args), figures=figures)}")


if __name__ == "__main__":
    main()
