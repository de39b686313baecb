"""What a Python DDP communication hook costs against DDP's built-in C++ all-reduce.

Three DDP replicas of the same MLP share one gloo group of N real agents: built-in
all-reduce (no hook), ddla's Transport hook, and PyTorch's own Python ``allreduce_hook``.
They train alternately in 30-step blocks, so machine noise hits all three alike; the figure is
forward+backward time per step (slowest agent). This is why ``allreduce`` takes the built-in
path when nothing needs to see the gradients.

    python benchmarks/ddp_hook_cost.py --agents 2 4
"""

from __future__ import annotations

import argparse
import time

import torch
from records import write_record
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from ddla.sync.allreduce import _transport_allreduce_hook
from ddla.testing import run_agents

BLOCKS, STEPS = 6, 30


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10),
    )  # fmt: skip


def measure(transport) -> dict[str, float]:
    torch.set_num_threads(1)
    group = transport.group
    models = {"builtin": DistributedDataParallel(_mlp(), process_group=group)}
    models["ddla_hook"] = DistributedDataParallel(_mlp(), process_group=group)
    models["ddla_hook"].register_comm_hook(transport, _transport_allreduce_hook)
    models["torch_python_hook"] = DistributedDataParallel(_mlp(), process_group=group)
    models["torch_python_hook"].register_comm_hook(group, default_hooks.allreduce_hook)
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    seconds = dict.fromkeys(models, 0.0)
    for _ in range(BLOCKS):
        for name, model in models.items():
            t0 = time.perf_counter()
            for _ in range(STEPS):
                model.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
            seconds[name] += time.perf_counter() - t0
    return {k: v / (BLOCKS * STEPS) * 1e3 for k, v in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[2, 4])
    args = parser.parse_args()
    figures = []
    for n in args.agents:
        per_rank = run_agents(measure, n, timeout_s=900)
        row = {k: round(max(r[k] for r in per_rank), 3) for k in per_rank[0]}
        figures.append({"agents": n, "ms_per_step": row})
        print(f"agents={n}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in row.items()))
    print(f"record: {write_record('ddp_hook_cost', config=vars(args), figures=figures)}")


if __name__ == "__main__":
    main()
