"""Shared data against non-IID data: Fashion-MNIST, 10 agents, one class per agent.

Reproduces the setting of Zhao et al. 2018 ("Federated Learning with Non-IID Data",
arXiv:1806.00582) with ddla: every agent holds a single class (``shards:1``), agents train
locally and average their models every ``--every`` steps (``local_sgd``), and before training
each agent contributes 0%, 1%, 5% or 10% of its shard to a pool replicated to all agents
(``data.share=shared:F``, sealed and audited). The IID split is the reference. All runs
authenticate and use secure aggregation; one extra run without secure aggregation measures its
byte overhead against the plain all-reduce in a real run.

    python benchmarks/shared_data.py                 # the recorded benchmark
    python benchmarks/shared_data.py --steps 50      # a quick look

Writes ``benchmarks/records/shared_data-latest.json`` (config, git SHA, machine, command,
results; also a timestamped copy) and ``benchmarks/records/shared_data.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from records import RECORDS, write_record

import ddla
from ddla.security.secret import write_secret


def _runs(fractions: list[float]) -> list[tuple[str, list[str]]]:
    runs = [("iid", ["data.partition=iid"])]
    for f in fractions:
        share = "none" if f == 0 else f"shared:{f:g}"
        runs.append(
            (f"shards:1 + {f:.0%} shared", ["data.partition=shards:1", f"data.share={share}"])
        )
    # Same as the 0% run but plain averaging: the secure-aggregation byte overhead, measured.
    runs.append(
        (
            "shards:1, plain all-reduce",
            ["data.partition=shards:1", "security.secure_aggregation=false"],
        )
    )
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300, help="local steps per agent")
    parser.add_argument("--every", type=int, default=10, help="average models every H steps")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--fractions", default="0,0.01,0.05,0.1")
    parser.add_argument("--strategy", default="local_sgd", help="a periodic-averaging strategy")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--out", type=Path, default=RECORDS)
    args = parser.parse_args(argv)
    fractions = [float(f) for f in args.fractions.split(",")]
    work = Path(tempfile.mkdtemp(prefix="ddla-shared-data-"))
    key = write_secret(work / "run.key")
    # Sharing, like pulling, needs each owner's consent: every peer may take the shared samples.
    policy = work / "policy.yaml"
    policy.write_text(
        'agents:\n  "*":\n    - {peers: "*", kinds: [samples], classes: "*", max_samples: 100000}\n'
    )
    common = [
        f"agents={args.agents}",
        f"data.dataset={args.dataset}",
        "model.name=mlp",
        f"sync.strategy={args.strategy}",
        f"sync.every={args.every}",
        f"train.steps={args.steps}",
        "train.eval_every=0",
        "train.eval_agents=false",
        f"data.batch_size={args.batch_size}",
        f"optim.lr={args.lr}",
        "optim.schedule=constant",  # as the recorded runs were measured
        "train.seed=0",
        "security.enabled=true",
        f"security.secret_file={key}",
        "security.secure_aggregation=true",
        f"security.policy={policy}",
    ]
    results = []
    for i, (label, overrides) in enumerate(_runs(fractions)):
        cfg = ddla.RunConfig.load(None, [*common, *overrides, f"out={work / f'run{i}'}"])
        start = time.perf_counter()
        summary = ddla.run(cfg, progress=False)
        row = {
            "label": label,
            "partition": cfg.data.partition,
            "share": cfg.data.share,
            "secure_aggregation": cfg.security.secure_aggregation,
            "accuracy": summary["final"]["accuracy"],
            "f1": summary["final"]["f1"],
            "loss": summary["final"]["loss"],
            "train_bytes_sent": summary["comm"]["bytes_sent"],
            "run_wall_s": round(time.perf_counter() - start, 1),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    secure = (
        next(r for r in results if r["partition"] != "iid" and r["share"] == "none")
        if 0.0 in fractions
        else None
    )
    plain = results[-1]
    overhead = secure["train_bytes_sent"] / plain["train_bytes_sent"] if secure else None
    config = {"overrides": [c for c in common if not c.startswith("security.secret_file")]}
    config.update({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    figures = {"results": results, "secure_aggregation_byte_overhead": overhead}
    path = write_record("shared_data", config=config, figures=figures)
    print(f"record: {path}")
    args.out.mkdir(parents=True, exist_ok=True)
    _plot(results, args.out / "shared_data.png", args)
    print(_table(results))
    print(f"secure aggregation byte overhead: {overhead}")
    return 0


def _table(results: list[dict]) -> str:
    lines = ["| run | accuracy | F1 | train bytes sent |", "|---|---:|---:|---:|"]
    for r in results:
        lines.append(
            f"| {r['label']} | {r['accuracy']:.2%} | {r['f1']:.3f} | "
            f"{r['train_bytes_sent'] / 2**20:.1f} MiB |"
        )
    return "\n".join(lines)


def _plot(results: list[dict], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shared = [r for r in results if r["partition"] != "iid" and r["secure_aggregation"]]
    iid = next(r for r in results if r["partition"] == "iid")
    xs = [0.0 if r["share"] == "none" else float(r["share"].split(":")[1]) * 100 for r in shared]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(xs, [r["accuracy"] * 100 for r in shared], "o-", label="one class per agent")
    ax.axhline(iid["accuracy"] * 100, color="gray", ls="--", label="IID")
    ax.set_xlabel("data shared by each agent (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(
        f"{args.dataset}, {args.agents} agents, {args.strategy} (H={args.every}, "
        f"{args.steps} steps)",
        fontsize=9,
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
