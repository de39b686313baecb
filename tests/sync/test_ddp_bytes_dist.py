"""allreduce's two DDP paths account exactly through the Transport's seam, with real gloo agents.

The fast path (DDP's C++ all-reduce, ``Transport.account`` once per step) and the hook path
(every bucket through ``Transport.all_reduce_async``, here forced by emulated links on the
virtual clock) must record the same ring-model bytes for the same training, reach the same
parameters as one process that sees every agent's batch, and the hook path must put exactly the
link model's time on the clock.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from ddla.comm import Transport, op_seconds
from ddla.comm.links import LinkTable
from ddla.comm.ring import ring_bytes
from ddla.config import RunConfig
from ddla.job import job_from_config
from ddla.sync import SyncConfig, build_strategy
from ddla.testing import run_agents

pytestmark = pytest.mark.dist

N = 3  # 3 agents: the ring model's integer division is exercised (2 * 2 * B // 3)
STEPS = 3
BATCH = 16
LINK = "1gbit:1ms"
CONFIG = ["data.dataset=digits", "model.hidden=16", f"agents={N}"]


def _job():
    return job_from_config(RunConfig.load(None, CONFIG))


def _batch(x: torch.Tensor, y: torch.Tensor, rank: int, step: int):
    idx = torch.arange(BATCH) + (step * N + rank) * BATCH
    return x[idx], y[idx]


def _train(transport: Transport) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    job = _job()  # seeded: identical parameters on every agent and in the reference
    x, y = job.train
    optimizer = torch.optim.SGD(job.model.parameters(), lr=0.1)
    strategy = build_strategy(
        SyncConfig(strategy="allreduce"), transport=transport, model=job.model, optimizer=optimizer
    )
    for step in range(STEPS):
        xb, yb = _batch(x, y, transport.rank, step)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(strategy.train_model(xb), yb).backward()
        optimizer.step()
    strategy.finish()
    stats = transport.stats.as_dict()["by_op_tag"]
    transport.stats.reset()
    return stats, {k: v.detach().clone() for k, v in job.model.state_dict().items()}


def _agent(transport: Transport) -> dict[str, Any]:
    fast = _train(transport)
    transport.emulate_links(LINK, clock="virtual")  # now payloads must pass the Transport
    hook = _train(transport)
    return {"fast": fast, "hook": hook, "modelled": transport.clock.modelled_s}


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    return run_agents(_agent, N, timeout_s=180)


def _grad_bytes() -> int:
    return sum(p.numel() * p.element_size() for p in _job().model.parameters())


def test_both_paths_match_a_single_process_reference(results):
    job = _job()
    x, y = job.train
    optimizer = torch.optim.SGD(job.model.parameters(), lr=0.1)
    for step in range(STEPS):  # one process, the union of every agent's batch
        xs, ys = zip(*(_batch(x, y, r, step) for r in range(N)), strict=True)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(job.model(torch.cat(xs)), torch.cat(ys)).backward()
        optimizer.step()
    for out in results:
        for path in ("fast", "hook"):
            state = out[path][1]
            for key, value in job.model.state_dict().items():
                torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6)


def test_fast_and_hook_paths_record_the_same_exact_bytes(results):
    nbytes = _grad_bytes()
    for rank, out in enumerate(results):
        sent, received = ring_bytes("all_reduce", nbytes, N, rank)
        for path in ("fast", "hook"):
            entry = out[path][0]["all_reduce/train"]
            # one bucket per step (the model is far below DDP's first 1 MiB bucket)
            assert (entry["calls"], entry["bytes_sent"], entry["bytes_received"]) == (
                STEPS,
                STEPS * sent,
                STEPS * received,
            ), (rank, path)
        assert out["hook"][0]["all_reduce/train"]["seconds"] > 0


def test_hook_path_charges_exactly_the_link_model(results):
    table = LinkTable.build(LINK, None, world_size=N)
    want = STEPS * op_seconds("all_reduce", _grad_bytes(), table=table, rank=0)
    for out in results:
        assert out["modelled"] == pytest.approx(want, rel=1e-12)
        assert out["hook"][0]["all_reduce/train"]["seconds"] >= want
