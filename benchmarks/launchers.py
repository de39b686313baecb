"""Start-up overhead of each launch engine: seconds from command to first step, side by side.

Each round runs the same 2-agent digits job once per engine, in turn (local, ray, spark, dask,
then the next round), through the real CLI (``python -m ddla.cli run --launcher E``) so the
figure includes everything a user waits for: interpreter and imports, the engine's start
(Ray's local instance, Spark's JVM, Dask's LocalCluster), the agents' rendezvous and the first
step. With ``train.eval_every=1`` the first row of ``metrics.jsonl`` appears right after step
1; this script polls for it. Figures per engine (median over rounds):

- first_step_s: command start -> the first metrics row is on disk;
- startup_s: first_step_s minus the agents' own wall time at step 1 (training + evaluation
  of step 1), i.e. the time before the first step began;
- total_s: command start -> exit (includes the engine's teardown);
- overhead_s: startup_s minus the local launcher's startup_s in the same round.

    nice -n 10 python benchmarks/launchers.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from records import write_record
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("local", "ray", "spark", "dask")
JOB = ["agents=2", "data.dataset=digits", "model.hidden=64", "train.eval_every=1"]


def one_run(engine: str, out: Path, steps: int) -> dict[str, float]:
    """Run the CLI once; the seconds to the first metrics row and to exit."""
    sets = [a for kv in [*JOB, f"train.steps={steps}"] for a in ("--set", kv)]
    cmd = [sys.executable, "-m", "ddla.cli", "run", "--launcher", engine, *sets]
    cmd += ["--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    metrics = out / "metrics.jsonl"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    first = None
    while proc.poll() is None:
        if first is None and metrics.is_file() and metrics.stat().st_size > 0:
            first = time.perf_counter() - t0
        time.sleep(0.02)
    total = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{engine} run failed ({proc.returncode}):\n{err}")
    row = json.loads(metrics.read_text().splitlines()[0])
    assert row["step"] == 1, row
    first = first if first is not None else total
    return {"first_step_s": first, "startup_s": first - row["wall_s"], "total_s": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    args = parser.parse_args()
    engines = ["local", *[e for e in args.engines if e != "local"]]
    runs: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for engine in engines:
                res = one_run(engine, Path(tmp) / f"{engine}-{r}", args.steps)
                runs[engine].append(res)
                print(f"round {r} {engine}: " + ", ".join(f"{k} {v:.1f}" for k, v in res.items()))
    figures = {}
    for engine in engines:
        med = {k: statistics.median(x[k] for x in runs[engine]) for k in runs[engine][0]}
        overheads = [
            x["startup_s"] - base["startup_s"]
            for x, base in zip(runs[engine], runs["local"], strict=True)
        ]
        figures[engine] = {
            **{k: round(v, 2) for k, v in med.items()},
            "overhead_s": round(statistics.median(overheads), 2),
            "rounds": [{k: round(v, 2) for k, v in x.items()} for x in runs[engine]],
        }
    table = Table(title="launch engines: seconds from command to first step (median)")
    for col in ("engine", "first step", "start-up", "overhead vs local", "total"):
        table.add_column(col, justify="left" if col == "engine" else "right")
    for engine, f in figures.items():
        table.add_row(
            engine,
            f"{f['first_step_s']:.1f}",
            f"{f['startup_s']:.1f}",
            f"{f['overhead_s']:+.1f}",
            f"{f['total_s']:.1f}",
        )
    Console().print(table)
    config = {"job": [*JOB, f"train.steps={args.steps}"], "rounds": args.rounds}
    print(f"record: {write_record('launchers', config=config, figures=figures)}")


if __name__ == "__main__":
    main()
