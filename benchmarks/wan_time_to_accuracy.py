"""Headline benchmark: time to 88% on Fashion-MNIST (MLP, 4 agents) over a 100 Mbit/s WAN.

Runs ``allreduce`` (the baseline: DDP, gradients averaged every step) and ddla's wide-area
strategies side by side in one invocation with :func:`ddla.bench.run_bench`, on the ``wan-100``
profile (100 Mbit/s, 25 ms each way) with the **virtual** clock: link time is modelled, not
slept, so the sweep takes minutes instead of hours; compute time is real time on this machine.
Every entry uses AdamW (lr 1e-3) as its inner optimizer, batch 64 per agent, IID split, seed 0.

    .venv/bin/python benchmarks/wan_time_to_accuracy.py            # full run, writes the record
    .venv/bin/python benchmarks/wan_time_to_accuracy.py --quick    # smoke test, no record

The record (config, git SHA, machine, command, per-entry rows) goes to
``benchmarks/records/wan_time_to_accuracy.json``; the table is printed in markdown for
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddla.bench import markdown_table, parse_entry, run_bench  # noqa: E402

RECORD = ROOT / "benchmarks" / "records" / "wan_time_to_accuracy.json"
#: --clock virtual-cpu runs get their own record, so one clock never overwrites the other's.
RECORD_CPU = RECORD.with_name("wan_time_to_accuracy_cpu.json")
BASE = [
    "agents=4",
    "data.dataset=fashion-mnist",
    "model.name=mlp",
    "data.partition=iid",
    "data.batch_size=64",
    "optim.name=adamw",
    "optim.lr=0.001",
    "optim.schedule=constant",  # as the recorded runs were measured
    "train.seed=0",
    "train.eval_agents=false",
    "comm.link=wan-100",
]
ENTRIES = [
    "allreduce,train.steps=2500,train.eval_every=100",
    "diloco,sync.every=100,sync.compress=int8,train.steps=2500,train.eval_every=100",
    "diloco,sync.every=250,sync.compress=int8,train.steps=3000,train.eval_every=250",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "wan"))
    parser.add_argument("--target", type=float, default=0.88)
    parser.add_argument("--entry", action="append", help="replace the entries (repeatable)")
    parser.add_argument("--quick", action="store_true", help="a few steps; no record")
    parser.add_argument("--clock", default="virtual", help="virtual or virtual-cpu")
    parser.add_argument(
        "--record", help="where the record goes (default: per clock, under benchmarks/records/)"
    )
    args = parser.parse_args(argv)
    args.record = args.record or str(RECORD_CPU if args.clock == "virtual-cpu" else RECORD)
    entries = args.entry or ENTRIES
    base = [*BASE, f"comm.clock={args.clock}"]
    if args.quick:
        entries = [e.split(",train.")[0] for e in entries]
        base += ["train.steps=40", "train.eval_every=20"]
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    command = " ".join(["python", "benchmarks/wan_time_to_accuracy.py", *sys.argv[1:]])
    record = run_bench(
        [parse_entry(e) for e in entries],
        out=out,
        target=args.target,
        overrides=base,
        command=command,
    )
    table = markdown_table(record)
    print(table)
    if not args.quick:
        for row in record["results"]:
            run_dir = Path(row["run_dir"]).resolve()
            if run_dir.is_relative_to(ROOT):
                row["run_dir"] = str(run_dir.relative_to(ROOT))
        path = Path(args.record)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"record: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
