"""Your own nn.Sequential cut into pipeline stages at named layers, with data-parallel replicas.

Four agents: 2 replicas x 2 stages. Agents 0 and 2 hold layers ``inp``..``act1``, agents 1
and 3 the rest (``model.split=hidden2`` names the first layer of stage 1); microbatches flow
through a 1F1B schedule, and the two agents of each stage all-reduce their gradients:

    python examples/pipeline_model.py --agents 4 --stages 2

The same script under torchrun on two machines (each process is one agent, stage = rank % 2):

    torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d \\
        --rdzv-endpoint HOST0:29400 --rdzv-id demo examples/pipeline_model.py
"""

from __future__ import annotations

import argparse
from collections import OrderedDict

import torch
from torch import nn

import ddla


def make_job() -> ddla.Job:
    """Runs inside every agent: the same seeded model (all of it: each agent trains its stage
    and evaluation assembles the whole) and the full dataset (ddla shards it per replica)."""
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
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", default="runs/pipeline")
    args = parser.parse_args()
    split = "hidden2" if args.stages == 2 else "auto"
    summary = ddla.launch(
        make_job,
        overrides=[
            f"agents={args.agents}",
            f"model.stages={args.stages}",
            f"model.split={split}",
            "model.microbatches=4",
            "model.schedule=1f1b",
            "sync.strategy=allreduce",
            f"train.steps={args.steps}",
            "train.eval_every=50",
            f"out={args.out}",
        ],
        progress=False,
    )
    if summary:  # under torchrun only rank 0 gets the summary
        d = summary["decomposition"]
        print(
            f"accuracy {summary['final']['accuracy']:.3f} after {summary['steps']} steps, "
            f"{d['replicas']} replicas x {d['stages']} stages"
        )


if __name__ == "__main__":
    main()
