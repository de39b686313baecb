"""The same custom job on the local launcher, Ray, Spark or Dask: results match bit for bit.

    python examples/on_engines.py --launcher local --agents 2
    python examples/on_engines.py --launcher ray --agents 2      # a local Ray instance
    python examples/on_engines.py --launcher dask --address tcp://HOST:8786 --agents 8
    python examples/on_engines.py --launcher spark --master spark://HOST:7077 --agents 8

The job factory below is defined in this script, so the engines ship it to their workers by
value (cloudpickle); a factory in an installed module travels by reference. On a cluster,
``--out`` must be on storage every worker sees.
"""

from __future__ import annotations

import argparse

import torch

import ddla


def make_job() -> ddla.Job:
    """Runs inside every agent: the same seeded model, the full dataset (each keeps a shard)."""
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
    parser.add_argument("--launcher", default="local", choices=["local", "ray", "spark", "dask"])
    parser.add_argument("--address", help="Ray or Dask cluster address (launch.address)")
    parser.add_argument("--master", help="Spark master URL (launch.master)")
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    overrides = [
        f"agents={args.agents}",
        f"train.steps={args.steps}",
        "train.eval_every=50",
        f"out={args.out or f'runs/on-{args.launcher}'}",
    ]
    overrides += [f"launch.address={args.address}"] if args.address else []
    overrides += [f"launch.master={args.master}"] if args.master else []
    summary = ddla.launch(make_job, overrides=overrides, launcher=args.launcher, progress=False)
    final = summary["final"]
    print(f"{args.launcher}: accuracy {final['accuracy']:.4f} loss {final['loss']:.6f}")


if __name__ == "__main__":
    main()
