"""Robust aggregation against Byzantine clients: final accuracy of mean, median, trimmed mean,
Krum and Bulyan with 0, 2 and 4 of 20 clients malicious, for each attack of
``fed.byzantine`` (signflip, scale:-5, gaussian:1, labelflip).

Digits (1,400 train / 397 test), 20 iid clients, all sampled every round (so exactly K attack
each round), E = 1, B = 10, SGD lr 0.1, over 2 real gloo agents in one spawn.

    nice -n 10 .venv/bin/python benchmarks/byzantine.py --rounds 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from sklearn.datasets import load_digits

from benchmarks.records import write_record
from ddla.comm import Transport
from ddla.compute import FederatedRound
from ddla.data import partition
from ddla.fed import FedConfig
from ddla.sync import SyncConfig, build_strategy
from ddla.testing import run_agents

KINDS = ("signflip", "scale:-5", "gaussian:1", "labelflip")


def rules(f: int) -> list[str]:
    return ["mean", "median", "trimmed_mean:0.2", f"krum:{f}", f"bulyan:{f}"]


def one(transport: Transport, aggregate: str, byzantine: str, rounds: int) -> float:
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    (xt, yt), (x, y) = (x[1400:], y[1400:]), (x[:1400], y[:1400])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    s = build_strategy(SyncConfig(strategy="fedavg"), transport=transport, model=model,
                       optimizer=opt)  # fmt: skip
    fed = FedConfig(clients=20, fraction=1.0, batch=10, aggregate=aggregate, byzantine=byzantine)
    rnd = FederatedRound(strategy=s, optimizer=opt, loss=torch.nn.functional.cross_entropy, x=x,
                         y=y, clients=partition("iid", y.numpy(), 20, 0), fed=fed)  # fmt: skip
    for r in range(rounds):
        rnd(r)
    s.close()
    with torch.no_grad():
        return float((model(xt).argmax(1) == yt).float().mean())


def agent(transport: Transport, runs: list[tuple[str, str]], rounds: int) -> dict[str, float]:
    torch.set_num_threads(1)
    return {f"{a}|{b}": one(transport, a, b, rounds) for a, b in runs}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--malicious", default="2,4")
    args = p.parse_args()
    ks = [int(k) for k in args.malicious.split(",")]
    runs = [(r, "") for r in rules(max(ks))]
    runs += [(r, f"{k}:{kind}") for k in ks for kind in KINDS for r in rules(k)]
    t0 = time.perf_counter()
    acc = run_agents(agent, 2, runs, args.rounds, timeout_s=3600)[0]
    table = {}
    for key, value in acc.items():
        rule, byz = key.split("|")
        table.setdefault(byz or "none", {})[rule.split(":")[0]] = round(value, 4)
    for byz, row in table.items():
        print(f"{byz:>14}", json.dumps(row))
    path = write_record(
        "byzantine",
        config={"dataset": "digits", "clients": 20, "fraction": 1.0, "epochs": 1, "batch": 10,
                "lr": 0.1, "rounds": args.rounds, "agents": 2, "model": "mlp 64-64-10",
                "trimmed_mean_beta": 0.2, "krum_bulyan_f": "K (the attacker count)"},
        figures={"final_accuracy": table, "wall_s": time.perf_counter() - t0},
    )  # fmt: skip
    print(path)


if __name__ == "__main__":
    main()
