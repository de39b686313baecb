"""What a Python DDP communication hook costs against DDP's built-in C++ all-reduce, and
ddla's compressed hooks against PyTorch's own.

DDP replicas of the same MLP share one gloo group of N real agents: built-in all-reduce (no
hook), ddla's Transport hook and PyTorch's Python ``allreduce_hook``; then ddla's
``sync.compress`` hooks (:mod:`ddla.sync.ddp_hooks`, as ``allreduce`` registers them: fp16/bf16
through ``compressed_hook``, PowerSGD rank 2 through ``BackgroundBuckets`` on a communication
thread; ``ddla_powersgd2_sync`` is the synchronous hook of ``sync.background=never``) for
fp16, bf16 and PowerSGD rank 2 beside PyTorch's ``fp16_compress_hook``,
``_bf16_hook`` below (PyTorch's ``fp16_compress_hook`` body with bfloat16: its own
``bf16_compress_hook`` and ``bf16_compress_wrapper`` refuse gloo, "required CUDA 11+ and NCCL
2.10+", torch 2.13) and ``PowerSGDState`` + ``powerSGD_hook`` (rank 2,
compressing from step 2). They train alternately in blocks on the same batches (every other
block in reverse order, so no entry always follows the same one), so machine noise hits all
alike; the figure is forward+backward time per step (slowest agent) and the ratio ddla / PyTorch
of each pair.

    python benchmarks/ddp_hook_cost.py --agents 2 4
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist
from records import write_record
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
from torch.nn.parallel import DistributedDataParallel

from ddla.aggregate import Aggregator
from ddla.comm.background import BackgroundChannel
from ddla.compress import build_compressor
from ddla.sync.ddp_hooks import BackgroundBuckets, bucket_hook, compressed_hook
from ddla.testing import run_agents

#: (ddla entry, PyTorch entry) whose per-step ratio the record reports.
PAIRS = [
    ("ddla_hook", "torch_python_hook"),
    ("ddla_fp16", "torch_fp16"),
    ("ddla_bf16", "torch_bf16"),
    ("ddla_powersgd2", "torch_powersgd2"),
]


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10),
    )  # fmt: skip


def _bf16_hook(group, bucket):
    """PyTorch's fp16_compress_hook, line for line, with bfloat16 (public APIs only)."""
    compressed = bucket.buffer().to(torch.bfloat16).div_(group.size())
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def decompress(fut):
        buffer = bucket.buffer()
        buffer.copy_(fut.value()[0])
        return buffer

    return fut.then(decompress)


def measure(transport, blocks: int, steps: int) -> dict[str, float]:
    torch.set_num_threads(1)
    group = transport.group

    def ddp(state=None, hook=None) -> DistributedDataParallel:
        model = DistributedDataParallel(_mlp(), process_group=group)
        if hook is not None:
            model.register_comm_hook(state, hook)
        return model

    def ours(spec: str) -> Aggregator:
        return Aggregator(transport, compressor=build_compressor(spec))

    def background(spec: str) -> BackgroundBuckets:
        channel = BackgroundChannel(transport)  # collective: every agent, same order
        return BackgroundBuckets(Aggregator(channel.transport, compressor=build_compressor(spec)),
                                 channel)  # fmt: skip

    psgd = powerSGD_hook.PowerSGDState(
        process_group=group, matrix_approximation_rank=2, start_powerSGD_iter=2
    )
    models = {
        "builtin": ddp(),
        "ddla_hook": ddp(ours("none"), bucket_hook),
        "torch_python_hook": ddp(group, default_hooks.allreduce_hook),
        "ddla_fp16": ddp(ours("fp16"), compressed_hook),
        "torch_fp16": ddp(group, default_hooks.fp16_compress_hook),
        "ddla_bf16": ddp(ours("bf16"), compressed_hook),
        "torch_bf16": ddp(group, _bf16_hook),
        "ddla_powersgd2": ddp(background("powersgd:2"), BackgroundBuckets.hook),
        "torch_powersgd2": ddp(psgd, powerSGD_hook.powerSGD_hook),
        "ddla_powersgd2_sync": ddp(ours("powersgd:2"), compressed_hook),
    }
    x, y = torch.randn(64, 784), torch.randint(0, 10, (64,))
    seconds = dict.fromkeys(models, 0.0)
    order = list(models.items())
    for block in range(blocks):
        for name, model in order if block % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            for _ in range(steps):
                model.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
            seconds[name] += time.perf_counter() - t0
    return {k: v / (blocks * steps) * 1e3 for k, v in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--steps", type=int, default=30, help="steps per block")
    args = parser.parse_args()
    figures = []
    for n in args.agents:
        per_rank = run_agents(measure, n, args.blocks, args.steps, timeout_s=3600)
        row = {k: round(max(r[k] for r in per_rank), 3) for k in per_rank[0]}
        ratios = {f"{a}/{b}": round(row[a] / row[b], 3) for a, b in PAIRS}
        figures.append({"agents": n, "ms_per_step": row, "ratio": ratios})
        print(f"agents={n}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in row.items()))
        print(f"agents={n}: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    print(f"record: {write_record('ddp_hook_cost', config=vars(args), figures=figures)}")


if __name__ == "__main__":
    main()
