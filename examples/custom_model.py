"""Train your own model, optimizer and data as ddla agents.

Locally (4 agents on this machine):
    python examples/custom_model.py --agents 4

On several machines, the same script under torchrun (each process is one agent):
    torchrun --nnodes 2 --nproc-per-node 2 --rdzv-backend c10d \\
        --rdzv-endpoint HOST0:29400 --rdzv-id demo examples/custom_model.py
"""

from __future__ import annotations

import argparse

import torch

import ddla


def make_job() -> ddla.Job:
    """Runs inside every agent: build the same model (seeded) and the full dataset."""
    ds = ddla.data.load_dataset("digits")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    return ddla.Job(
        model=model,
        train=(ds.x_train, ds.y_train),
        test=(ds.x_test, ds.y_test),
        optimizer=lambda params: torch.optim.Adam(params, lr=3e-3),
        classes=ds.classes,
        name="digits",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", default="runs/custom")
    args = parser.parse_args()
    summary = ddla.launch(
        make_job,
        overrides=[
            f"agents={args.agents}",
            f"train.steps={args.steps}",
            "train.eval_every=50",
            f"out={args.out}",
        ],
        progress=False,
    )
    if summary:  # under torchrun only rank 0 gets the summary
        print(f"accuracy {summary['final']['accuracy']:.3f} after {summary['steps']} steps")


if __name__ == "__main__":
    main()
