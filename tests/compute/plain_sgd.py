"""The single-process reference of the decomposition tests: plain SGD of the whole model."""

from __future__ import annotations

import torch

from ddla.config import RunConfig
from ddla.data import AgentBatches, partition
from ddla.job import job_from_config


def reference(config: RunConfig, steps: int, replicas: int = 1) -> dict[str, torch.Tensor]:
    """Plain single-process SGD of the whole model on every replica's batch, concatenated
    (what all-reduce of equal-sized batches' mean gradients computes)."""
    job = job_from_config(config)
    x, y = job.train
    parts = partition(config.data.partition, y.numpy(), replicas, config.train.seed)
    streams = [
        AgentBatches(p, batch_size=config.data.batch_size, seed=config.train.seed, rank=r)
        for r, p in enumerate(parts)
    ]
    opt = torch.optim.SGD(job.model.parameters(), lr=config.optim.lr)
    for step in range(steps):
        idx = torch.cat([torch.from_numpy(s.batch(step)) for s in streams])
        opt.zero_grad()
        torch.nn.functional.cross_entropy(job.model(x[idx]), y[idx]).backward()
        opt.step()
    return dict(job.model.state_dict())
