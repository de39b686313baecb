"""Roles in a decomposed run: replica r, pipeline stage s, tensor shard t of each agent.

``agents = replicas * stages * tensor_parallel``; an agent's run rank is
``r * (S * T) + s * T + t``, so one replica's agents are consecutive ranks (a pipeline or a
tensor-parallel group on one machine when machines hold consecutive ranks). Groups:

- ``pipe``: the stages of this replica holding shard t (activations flow here; with
  ``T > 1`` a replica runs T such pipelines, each stage's output being whole on every shard);
- ``tp``: the tensor shards of this replica's stage (partial sums are all-reduced here);
- ``sync``: the agents holding the same stage and shard in every replica: the strategy's
  group (``allreduce``, ``local_sgd``, ``diloco``, compression included), over which their
  stage parameters stay one model.

Every agent builds the layout with the same config on the run-wide Transport (subgroups are
made collectively). Evaluation and export see the whole model: :meth:`Layout.assemble` gathers
every agent's part (tag ``eval``), averages each part over the replicas and joins stages and
shards into one ``state_dict`` of the original model.

Example::

    layout = build_layout(config.model, job.model, transport)   # on every agent
    layout.replica, layout.stage, layout.shard                  # this agent's role
    full = layout.eval_model(layout.module)                     # the whole model, all agents
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ddla.errors import ConfigError

log = logging.getLogger("ddla.layout")

if TYPE_CHECKING:
    from ddla.comm import Transport
    from ddla.config import RunConfig
    from ddla.models import ModelConfig


@dataclass
class Layout:
    """This agent's role and groups (see the module docstring)."""

    replicas: int
    stages: int
    tensor: int
    replica: int
    stage: int
    shard: int
    module: torch.nn.Module
    """What this agent trains: the whole model, its stage, or its tensor shard."""
    world: Transport
    sync: Transport
    pipe: Transport | None = None
    tp: Transport | None = None
    full: torch.nn.Module | None = None
    """The whole model (the job's), into which :meth:`assemble` loads the gathered parts."""
    dims: dict[str, int | None] = field(default_factory=dict)
    """Tensor-parallel split dimension of each full state key (None: whole)."""
    plan: list[list[str]] | None = None
    """Layer names of each pipeline stage (None: no stages), the same on every agent."""

    @property
    def decomposed(self) -> bool:
        return self.stages > 1 or self.tensor > 1

    def check_resumed(self, state: dict[str, Any]) -> None:
        """Refuse (one line) a checkpointed part that is not this agent's part now: with
        ``model.split=time`` a resumed run measures the layers again and may cut elsewhere."""
        if self.plan is None or set(state) == set(self.module.state_dict()):
            return
        split = ",".join(stage[0] for stage in self.plan[1:])
        raise ConfigError(
            f"the checkpoint of stage {self.stage} holds other layers than the stage plan of "
            f"this run ({split}): the measured split (model.split=time) moved",
            help="resume with model.split set to the checkpointed run's split points "
            "(its summary.json decomposition.plan and agent logs name its plan)",
        )

    def assemble(self) -> dict[str, torch.Tensor]:
        """The whole model's state: every agent's part, averaged over replicas (tag ``eval``).

        Collective: every agent calls it at the same point.
        """
        mine = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        parts = self.world.all_gather_object((self.stage, self.shard, mine), tag="eval")
        by_role: dict[tuple[int, int], list[dict[str, torch.Tensor]]] = {}
        for stage, shard, state in parts:
            by_role.setdefault((stage, shard), []).append(state)
        role_state = {role: _mean_states(states) for role, states in by_role.items()}
        assert self.full is not None
        full: dict[str, torch.Tensor] = {}
        for key in self.full.state_dict():
            holders = sorted(role for role, state in role_state.items() if key in state)
            pieces = [role_state[role][key] for role in holders]
            dim = self.dims.get(key)
            full[key] = torch.cat(pieces, dim=dim) if dim is not None else pieces[0]
        return full

    def eval_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """What evaluation sees: ``model`` itself, or (decomposed) the assembled whole model."""
        if not self.decomposed:
            return model
        assert self.full is not None
        self.full.load_state_dict(self.assemble())
        return self.full


def state_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes of ``module``'s parameters and of ``optimizer``'s state tensors (momentum, Adam
    moments): what a stage or shard saves against the whole model."""
    params = sum(p.numel() * p.element_size() for p in module.parameters())
    opt = sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor)
    )
    return {"parameter_bytes": params, "optimizer_bytes": opt}


def agents_report(
    layout: Layout, stats: dict[str, Any], optimizer: torch.optim.Optimizer
) -> list[dict[str, Any]] | None:
    """Every agent's role, state bytes and Compute figures, on every agent; collective (tag
    ``control``) in a decomposed run, local with one agent, None otherwise (no message)."""
    mine = {
        "rank": layout.world.rank, "replica": layout.replica, "stage": layout.stage,
        "shard": layout.shard, **state_bytes(layout.module, optimizer), **stats,
    }  # fmt: skip
    if layout.decomposed:
        return layout.world.all_gather_object(mine, tag="control")
    return [mine] if layout.world.world_size == 1 else None


def _mean_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    out = {}
    for key in states[0]:
        values = [s[key] for s in states]
        floating = values[0].is_floating_point()
        out[key] = torch.stack(values).mean(0) if floating and len(values) > 1 else values[0]
    return out


def check_layout(config: RunConfig, world_size: int) -> int:
    """The number of replicas of a run of ``world_size`` agents; refuses (one line) a world
    that the stages and shards do not divide. The settings alone are checked by
    :func:`ddla.models.config.check_decomposition` when the config is built."""
    mc = config.model
    per_replica = mc.stages * mc.tensor_parallel
    if world_size % per_replica:
        raise ConfigError(
            f"{world_size} agents cannot form replicas of model.stages={mc.stages} x "
            f"model.tensor_parallel={mc.tensor_parallel} agents",
            help=f"use a multiple of {per_replica} agents (replicas = agents / {per_replica})",
        )
    return world_size // per_replica


def build_layout(
    config: ModelConfig,
    model: torch.nn.Module,
    transport: Transport,
    example: torch.Tensor | None = None,
) -> Layout:
    """This agent's :class:`Layout` over ``transport`` (the run-wide one; collective).

    ``example``: a sample batch, needed by ``model.split=time`` (each layer is timed on it).
    With stages and tensor shards both, shard ``t`` of every stage of a replica forms one
    pipeline (stage outputs are whole on every shard: no stage ends inside a pair), so the
    ``S x T`` agents of a replica run T pipelines side by side, linked within each stage by
    that stage's tensor-parallel group.
    """
    from ddla.compute.tensor_parallel import parallel_pairs, shard_dims, shard_sequential
    from ddla.models.decompose import plan_stages, stage_module

    world = transport.world_size
    if not config.decomposed:
        return Layout(world, 1, 1, transport.rank, 0, 0, model, transport, transport)
    s_n, t_n = config.stages, config.tensor_parallel
    per = s_n * t_n
    d_n = world // per
    rank = transport.rank
    replica, rest = divmod(rank, per)
    stage, shard = divmod(rest, t_n)
    # Checked before any group is made, on every agent alike.
    dims = shard_dims(model, t_n) if t_n > 1 else {}
    pairs = parallel_pairs(model) if t_n > 1 else []
    plan = None
    if s_n > 1:
        times = None
        if config.split.strip() == "time":
            from ddla.models.profile import agreed_layer_times

            if example is None:
                raise ValueError("model.split=time needs a sample batch to time the layers")
            times = agreed_layer_times(model, example, transport)
        plan = plan_stages(model, s_n, config.split, keep=pairs, times=times)
        log.info("stage plan (model.split=%s): %s", config.split, plan)

    def ranks(r: int, s: int, t: int) -> int:
        return r * per + s * t_n + t

    pipes = [[ranks(r, s, t) for s in range(s_n)] for r in range(d_n) for t in range(t_n)]
    tps = [[ranks(r, s, t) for t in range(t_n)] for r in range(d_n) for s in range(s_n)]
    syncs = [[ranks(r, s, t) for r in range(d_n)] for s in range(s_n) for t in range(t_n)]
    pipe = transport.split(pipes) if s_n > 1 else None
    tp = transport.split(tps) if t_n > 1 else None
    sync = transport.split(syncs)
    module: torch.nn.Module = model
    if plan is not None:
        module = stage_module(model, plan[stage])
    if tp is not None:
        names = {name for name, _ in module.named_children()}
        mine = [(c, r) for c, r in pairs if c in names]
        module = shard_sequential(module, transport=tp, pairs=mine)
    full = copy.deepcopy(model)
    return Layout(
        d_n, s_n, t_n, replica, stage, shard, module, transport, sync, pipe, tp, full, dims,
        plan,
    )  # fmt: skip


def layout_summary(
    layout: Layout, config: RunConfig, agents: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The ``decomposition`` entry of ``summary.json`` (``agents``: see :func:`agents_report`)."""
    out: dict[str, Any] = {
        "replicas": layout.replicas,
        "stages": layout.stages,
        "tensor_parallel": layout.tensor,
        "microbatches": config.model.microbatches if layout.stages > 1 else 1,
        "schedule": config.model.schedule if layout.stages > 1 else None,
        "split": config.model.split if layout.stages > 1 else None,
        "plan": layout.plan,
    }
    if agents is not None:
        out["agents"] = agents
    return out
