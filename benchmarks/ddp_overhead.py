"""ddla's `allreduce` against a plain PyTorch DDP script: same model, data, batches and steps.

Both run under PyTorch's elastic launcher with the same thread share per agent; runs alternate
(ddla, DDP, DDP, ddla, ...) so machine noise hits both alike. Two figures per agent count,
both ratios ddla / DDP of time inside training steps per step (slowest agent):

- wall: wall-clock step time, median over rounds (the issue's figure; on a loaded shared
  machine it also measures who was descheduled when);
- cpu: CPU seconds of the agent process per step, median over rounds: the work each side
  does, insensitive to other processes on the machine.

Goal: at most 1.05.

    python benchmarks/ddp_overhead.py --agents 2 4 --steps 300 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch
import torch.distributed as dist
from alternate import alternate
from records import write_record
from rich.console import Console
from rich.table import Table
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

import ddla
from ddla.config import RunConfig
from ddla.data import AgentBatches, partition
from ddla.job import job_from_config
from ddla.tasks import resolve_partition
from ddla.testing import free_port


def plain_ddp_worker(config_dict: dict) -> tuple[float, float]:
    """A textbook DDP loop over the same data as ddla; (wall, CPU) seconds inside steps."""
    config = RunConfig.from_dict(config_dict)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    job = job_from_config(config)
    x, y = job.train
    spec = resolve_partition(config.data.partition, job.task_spec)
    parts = partition(spec, job.partition_labels.numpy(), world, config.train.seed)
    batches = AgentBatches(
        parts[rank], batch_size=config.data.batch_size, seed=config.train.seed, rank=rank
    )
    model = torch.nn.parallel.DistributedDataParallel(job.model)
    opt = torch.optim.SGD(model.parameters(), lr=config.optim.lr, momentum=config.optim.momentum)
    wall = cpu = 0.0
    for step in range(config.train.steps):
        idx = torch.from_numpy(batches.batch(step))
        t0, p0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        wall += time.perf_counter() - t0
        cpu += time.process_time() - p0
    dist.destroy_process_group()
    return wall, cpu


def run_plain(config: RunConfig) -> tuple[float, float]:
    lc = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=config.agents, run_id=uuid.uuid4().hex[:8],
        rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port()}", max_restarts=0,
        monitor_interval=0.1, local_addr="127.0.0.1",
    )  # fmt: skip
    results = elastic_launch(lc, plain_ddp_worker)(config.to_dict())
    return max(w for w, _ in results.values()), max(c for _, c in results.values())


def run_ddla(config: RunConfig) -> tuple[float, float]:
    # Every round reuses one scratch run directory: replacing the previous round is intended.
    summary = ddla.launch(config=config, progress=False, force=True)
    agents = summary["comm"]["per_agent"]
    return max(a["train_s"] for a in agents), max(a["train_cpu_s"] for a in agents)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    if args.dataset == "fashion-mnist" and not Path("/usr/share/datasets/fashion-mnist").is_dir():
        sys.exit(
            "Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (make setup does)"
        )
    figures, console = [], Console()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.agents:
            config = RunConfig.load(None, [
                f"agents={n}", f"data.dataset={args.dataset}", f"model.name={args.model}",
                f"data.batch_size={args.batch_size}", f"train.steps={args.steps}",
                "train.eval_every=0", "train.eval_agents=false", "optim.name=sgd",
                "optim.lr=0.05", "optim.momentum=0.9", "optim.schedule=constant",
                f"out={tmp}/run",
            ])  # fmt: skip
            timed = alternate(
                ("ddp", "ddla"),
                rounds=args.rounds,
                steps=args.steps,
                measure=lambda who, c=config: run_ddla(c) if who == "ddla" else run_plain(c),
                report=lambda r, who, w, c, n=n: console.print(
                    f"agents={n} round={r} {who}: {w:.3f} ms/step wall, {c:.3f} ms/step cpu"
                ),
            )
            wall, cpu = timed.wall, timed.cpu
            figures.append({
                "agents": n,
                "ddla_ms_per_step": round(timed.median("wall", "ddla"), 4),
                "ddp_ms_per_step": round(timed.median("wall", "ddp"), 4),
                "ratio": round(timed.ratio("wall"), 4),
                "ddla_cpu_ms_per_step": round(timed.median("cpu", "ddla"), 4),
                "ddp_cpu_ms_per_step": round(timed.median("cpu", "ddp"), 4),
                "cpu_ratio": round(timed.ratio("cpu"), 4),
                "rounds_wall_ms": wall, "rounds_cpu_ms": cpu,
            })  # fmt: skip
    table = Table(title="ddla allreduce vs plain DDP (median of alternating rounds)")
    for col in ("agents", "ddla ms/step", "DDP ms/step", "wall ratio", "cpu ratio"):
        table.add_column(col, justify="right")
    for f in figures:
        table.add_row(
            str(f["agents"]), f"{f['ddla_ms_per_step']:.3f}", f"{f['ddp_ms_per_step']:.3f}",
            f"{f['ratio']:.3f}", f"{f['cpu_ratio']:.3f}",
        )  # fmt: skip
    console.print(table)
    path = write_record("ddp_overhead", config=vars(args), figures=figures)
    console.print(f"record: {path}")


if __name__ == "__main__":
    main()
