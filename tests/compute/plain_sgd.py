"""The single-process reference of the decomposition tests: plain SGD of the whole model."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ddla.config import RunConfig
from ddla.data import AgentBatches, partition
from ddla.job import job_from_config
from ddla.tasks import resolve_partition


def digits_sgd(*extra: str, steps: int = 6, batch: int = 16, hidden: int = 32) -> list[str]:
    """``--set`` overrides of the decomposition tests' run: a digits MLP trained by plain
    constant-lr SGD (what :func:`reference` replays), no evaluation, then ``extra``."""
    return [
        "data.dataset=digits", "data.partition=iid", f"data.batch_size={batch}",
        f"model.hidden={hidden}", "optim.name=sgd", "optim.lr=0.1", "optim.momentum=0.0",
        "optim.schedule=constant", f"train.steps={steps}", "train.eval_every=0",
        "train.eval_agents=false", *extra,
    ]  # fmt: skip


def reference(
    config: RunConfig,
    steps: int,
    replicas: int = 1,
    after_step: Callable[[int, torch.nn.Module], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Plain single-process SGD of the whole model on every replica's batch, concatenated
    (what all-reduce of equal-sized batches' mean gradients computes), with the task's loss;
    ``after_step(done, model)`` after each step."""
    job = job_from_config(config)
    x, y = job.train
    spec = resolve_partition(config.data.partition, job.task_spec)
    parts = partition(spec, job.partition_labels.numpy(), replicas, config.train.seed)
    streams = [
        AgentBatches(p, batch_size=config.data.batch_size, seed=config.train.seed, rank=r)
        for r, p in enumerate(parts)
    ]
    opt = torch.optim.SGD(job.model.parameters(), lr=config.optim.lr)
    for step in range(steps):
        idx = torch.cat([torch.from_numpy(s.batch(step)) for s in streams])
        opt.zero_grad()
        job.loss(job.model(x[idx]), y[idx]).backward()
        opt.step()
        if after_step is not None:
            after_step(step + 1, job.model)
    return dict(job.model.state_dict())
