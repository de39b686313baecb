"""allreduce + fp16/bf16: the DDP hook returns the future of an asynchronous low-precision
all-reduce (like PyTorch's fp16_compress_hook); fp16 gradients match PyTorch's own hook on the
same model and batches, bf16 an independent reference (PyTorch's bf16_compress_hook refuses
gloo: "BF16 all reduce communication hook required CUDA 11+ and NCCL 2.10+", torch 2.13), and
the bytes are those of a 2-byte wire."""

from __future__ import annotations

import pytest
import torch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel

from ddla.comm.ring import ring_bytes
from ddla.sync import SyncConfig, build_strategy
from ddla.testing import run_agents

pytestmark = pytest.mark.dist

SPECS = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def _grads(model: torch.nn.Module, rank: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(rank)
    x, y = torch.randn(8, 20, generator=gen), torch.randint(0, 4, (8,), generator=gen)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def _agent(transport) -> dict[str, object]:
    out: dict[str, object] = {}
    for spec, wire in SPECS.items():
        model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        strategy = build_strategy(
            SyncConfig(strategy="allreduce", compress=spec),
            transport=transport,
            model=model,
            optimizer=opt,
        )
        before = transport.stats.totals("train")["bytes_sent"]
        ours = _grads(strategy.train_model, transport.rank)
        sent = transport.stats.totals("train")["bytes_sent"] - before
        strategy.close()
        if spec == "fp16":
            theirs_model = DistributedDataParallel(_model(), process_group=transport.group)
            theirs_model.register_comm_hook(transport.group, default_hooks.fp16_compress_hook)
            theirs = _grads(theirs_model, transport.rank)
        else:  # each agent's own gradients, halved, cast, summed on the wire dtype
            local = [_grads(_model(), r) for r in range(transport.world_size)]
            theirs = [
                sum((g[i] / 2).to(wire).float() for g in local).to(wire).float()
                for i in range(len(local[0]))
            ]
        values = sum(p.numel() for p in model.parameters())
        out[spec] = (ours, theirs, sent, ring_bytes("all_reduce", 2 * values, 2, 0)[0])
    return out


def test_low_precision_hooks_match_pytorchs_and_send_two_bytes_per_value():
    for got in run_agents(_agent, 2, timeout_s=300):
        for spec in SPECS:
            ours, theirs, sent, want_sent = got[spec]
            assert sent == want_sent, spec  # one bucket of 2-byte values, ring model
            tol = {"fp16": 1e-3, "bf16": 1e-2}[spec]
            for a, b in zip(ours, theirs, strict=True):
                torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=spec)
