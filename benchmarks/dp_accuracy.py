"""DP-FedAvg: final accuracy against the ε the accountant reports, for three noise levels, on
the FedAvg workload of benchmarks/flower_side_by_side.py (Fashion-MNIST, MLP 784-128-128-10,
100 iid clients, C = 0.1 Poisson-sampled, E = 1, B = 10, SGD lr 0.05), plus the run without DP.
Each point is one `ddla run` (2 agents, central noise, clip S, δ = 1e-5).

    nice -n 10 .venv/bin/python benchmarks/dp_accuracy.py --rounds 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ddla
from benchmarks.records import write_record


def run(out: Path, rounds: int, noise: float | None, clip: float) -> dict:
    dp = ["fed.dp=central", f"fed.clip={clip}", f"fed.dp_noise={noise}"] if noise else []
    t0 = time.perf_counter()
    summary = ddla.launch(
        overrides=[
            "agents=2", "data.dataset=fashion-mnist", "model.name=mlp", "model.hidden=128",
            "sync.strategy=fedavg", "fed.clients=100", "fed.fraction=0.1", "fed.batch=10",
            "optim.name=sgd", "optim.lr=0.05", "optim.momentum=0", "optim.schedule=constant",
            "data.partition=iid", f"train.steps={rounds}", "train.eval_every=0", f"out={out}",
            *dp,
        ],
        progress=False,
    )  # fmt: skip
    fed = summary["federated"]
    return {
        "noise_multiplier": noise or 0.0, "clip": clip if noise else None,
        "epsilon": fed["dp"]["epsilon"] if noise else None, "delta": 1e-5 if noise else None,
        "final_accuracy": summary["final"]["accuracy"], "wall_s": time.perf_counter() - t0,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--noise", default="0.5,1.0,2.0")
    p.add_argument("--clip", type=float, default=1.0)
    args = p.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    rows = []
    with tempfile.TemporaryDirectory(prefix="fed2-dp-") as tmp:
        for i, noise in enumerate([None, *[float(n) for n in args.noise.split(",")]]):
            rows.append(run(Path(tmp) / str(i), args.rounds, noise, args.clip))
            print(json.dumps(rows[-1]), flush=True)
    path = write_record(
        "dp_accuracy",
        config={"dataset": "fashion-mnist", "clients": 100, "fraction": 0.1, "epochs": 1,
                "batch": 10, "lr": 0.05, "rounds": args.rounds, "agents": 2, "dp": "central",
                "accountant": "dp_accounting RDP, Poisson-sampled Gaussian"},
        figures=rows,
    )  # fmt: skip
    print(path)


if __name__ == "__main__":
    main()
