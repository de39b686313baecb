"""Choose this agent's Compute from the run config (the agent loop stays one loop)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ddla.compute.base import Compute
from ddla.compute.replica import Batch, Replica

if TYPE_CHECKING:
    import torch

    from ddla.compute.layout import Layout
    from ddla.config import RunConfig
    from ddla.sync import Strategy


def build_compute(
    config: RunConfig,
    *,
    strategy: Strategy,
    optimizer: torch.optim.Optimizer,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batch: Callable[[int], Batch],
    train: tuple[torch.Tensor, torch.Tensor],
    layout: Layout | None = None,
) -> Compute:
    """A :class:`~ddla.compute.federated.FederatedRound` for a federated strategy (clients
    partitioned by ``data.partition`` into ``fed.clients``), a
    :class:`~ddla.compute.pipeline.PipelineCompute` for a pipeline stage of ``layout``, else a
    data-parallel Replica (whose model may be a tensor-parallel shard); a straggler's
    (``fault.slow``) wrapped in :class:`~ddla.compute.straggler.Slowed`."""
    compute = _build(config, strategy, optimizer, loss, batch, train, layout)
    transport = strategy.transport
    factor = config.fault.slowdown(transport.global_ranks[transport.rank])
    if factor == 1.0:
        return compute
    from ddla.compute.straggler import Slowed

    return Slowed(compute, factor=factor, transport=transport)


def _build(config, strategy, optimizer, loss, batch, train, layout) -> Compute:
    if hasattr(strategy, "build_compute"):  # a role that is no replica (a dedicated server)
        role = strategy.build_compute(optimizer=optimizer, loss=loss, batch=batch)
        if role is not None:
            return role
    if layout is not None and layout.stages > 1:
        return _pipeline(config, strategy, optimizer, loss, batch, train, layout)
    if not getattr(strategy, "federated", False):
        return Replica(strategy=strategy, optimizer=optimizer, loss=loss, batch=batch)
    from ddla.compute.federated import FederatedRound
    from ddla.data import partition

    x, y = train
    # "auto" is the task's default; for the labelled datasets clients hold, that is iid.
    spec = "iid" if config.data.partition == "auto" else config.data.partition
    clients = partition(spec, y.numpy(), config.fed.clients, config.train.seed)
    return FederatedRound(
        strategy=strategy, optimizer=optimizer, loss=loss, x=x, y=y, clients=clients,  # type: ignore[arg-type]
        fed=config.fed, seed=config.train.seed, state_dir=Path(config.out) / "fed",
    )  # fmt: skip


def _pipeline(config, strategy, optimizer, loss, batch, train, layout) -> Compute:
    from ddla.compute.pipeline import PipelineCompute, boundary_shapes
    from ddla.models.decompose import stage_module

    mc = config.model
    assert layout.full is not None and layout.pipe is not None and layout.plan is not None
    # Shapes from the whole (unsharded) stages: a stage's output is whole on every shard.
    stages = [stage_module(layout.full, names) for names in layout.plan]
    micro = config.data.batch_size // mc.microbatches
    example = train[0][:micro]
    shapes = boundary_shapes(stages, example)
    return PipelineCompute(
        strategy=strategy, optimizer=optimizer, loss=loss, batch=batch, pipe=layout.pipe,
        index=layout.stage, stages=mc.stages, microbatches=mc.microbatches,
        schedule=mc.schedule, example=shapes[layout.stage],
    )  # fmt: skip
