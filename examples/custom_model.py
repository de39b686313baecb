"""Train your own model, optimizer and data as ddla agents; optionally cut into pipeline stages.

Locally (4 data-parallel agents on this machine):
    python examples/custom_model.py --agents 4

The same nn.Sequential cut into 2 pipeline stages at a named layer (``--split hidden2``: the
first layer of stage 1; agents 0 and 2 hold ``inp``..``act1``, agents 1 and 3 the rest), with
microbatches through a 1F1B schedule and the 2 replicas of each stage all-reducing:
    python examples/custom_model.py --agents 4 --stages 2 --split hidden2

On several machines, the same script under torchrun (each process is one agent; with
``--stages 2`` a replica's stages are consecutive ranks):
    torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d \\
        --rdzv-endpoint HOST0:29400 --rdzv-id demo examples/custom_model.py --stages 2
"""

from __future__ import annotations

import argparse
from collections import OrderedDict

import torch
from torch import nn

import ddla


def make_job() -> ddla.Job:
    """Runs inside every agent: the same seeded model (all of it: a pipeline stage trains its
    layers and evaluation assembles the whole) and the full dataset (ddla shards it)."""
    ds = ddla.data.load_dataset("digits")
    torch.manual_seed(0)
    layers = OrderedDict(
        inp=nn.Flatten(),
        hidden1=nn.Linear(64, 128),
        act1=nn.ReLU(),
        hidden2=nn.Linear(128, 128),
        act2=nn.ReLU(),
        out=nn.Linear(128, 10),
    )
    return ddla.Job(
        model=nn.Sequential(layers),
        train=(ds.x_train, ds.y_train),
        test=(ds.x_test, ds.y_test),
        optimizer=lambda params: torch.optim.Adam(params, lr=3e-3),
        classes=ds.classes,
        name="digits",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--stages", type=int, default=1, help="pipeline stages (1: none)")
    parser.add_argument("--split", default="auto", help="layer names opening stages 1..S-1")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default="runs/custom")
    args = parser.parse_args()
    pipeline = [
        f"model.stages={args.stages}",
        f"model.split={args.split}",
        "model.microbatches=4",
        "model.schedule=1f1b",
        "sync.strategy=allreduce",
    ]
    summary = ddla.launch(
        make_job,
        overrides=[
            f"agents={args.agents}",
            f"train.steps={args.steps}",
            "train.eval_every=50",
            f"out={args.out}",
            *(pipeline if args.stages > 1 else []),
        ],
        progress=False,
    )
    if summary:  # under torchrun only rank 0 gets the summary
        line = f"accuracy {summary['final']['accuracy']:.3f} after {summary['steps']} steps"
        if "decomposition" in summary:
            d = summary["decomposition"]
            line += f", {d['replicas']} replicas x {d['stages']} stages"
        print(line)


if __name__ == "__main__":
    main()
