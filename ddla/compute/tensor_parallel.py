"""Tensor-parallel Linear layers: a weight matrix split into sub-matrices across T agents.

Megatron-LM's scheme (Shoeybi et al. 2019, arXiv 1909.08053, section 3): in each pair of
Linear layers separated only by elementwise activations, the first is split by output features
(**column-parallel**: agent t computes its slice of the activations, no communication), the
second by input features (**row-parallel**: agent t multiplies its slice, an all-reduce sums the
partial outputs, the bias is added once). Backward mirrors it: one all-reduce of the input
gradient of the column-parallel layer. So each pair costs one all-reduce forward and one
backward, and each agent holds 1/T of the pair's weights. Layers outside pairs stay whole on
every agent (their gradients are identical across the group, as their inputs and output
gradients are).

Every all-reduce goes through the group's :class:`~ddla.comm.Transport` (tag ``train``), so
bytes are exact and emulated links delay it. Why not ``torch.distributed.tensor.parallel``
(DTensor ``ColwiseParallel``/``RowwiseParallel``): its collectives are functional collectives
issued inside DTensor's dispatch, below any Python seam, so the Transport could only guess
their bytes and link emulation could not delay them; the two autograd functions below are the
whole of what the Transport path needs.

Example (one agent: T=1 keeps the layer whole, the same code path as T agents)::

    pair = shard_sequential(model, transport=tp_group)   # every agent of the group
    out = pair(x)                                        # equals model(x)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ddla.errors import ConfigError
from ddla.models.decompose import sequential_layers

if TYPE_CHECKING:
    from ddla.comm import Transport

#: Modules that act element by element, so a feature-split activation passes through them.
ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.LeakyReLU, nn.Identity)


class _CopyToShards(torch.autograd.Function):
    """Megatron's ``f``: identity forward, all-reduce (sum) of the gradient backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, transport: Transport) -> torch.Tensor:
        ctx.transport = transport
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        ctx.transport.all_reduce(grad, tag="train")
        return grad, None


class _SumFromShards(torch.autograd.Function):
    """Megatron's ``g``: all-reduce (sum) forward, identity backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, transport: Transport) -> torch.Tensor:
        out = x.contiguous().clone()
        transport.all_reduce(out, tag="train")
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def _chunk(tensor: torch.Tensor, dim: int, parts: int, index: int) -> torch.Tensor:
    return tensor.detach().chunk(parts, dim=dim)[index].clone()


class ColumnParallelLinear(nn.Module):
    """Output features ``[t*n/T, (t+1)*n/T)`` of a Linear; the input is replicated."""

    def __init__(self, linear: nn.Linear, transport: Transport) -> None:
        super().__init__()
        t, parts = transport.rank, transport.world_size
        self.transport = transport
        self.weight = nn.Parameter(_chunk(linear.weight, 0, parts, t))
        self.bias = None if linear.bias is None else nn.Parameter(_chunk(linear.bias, 0, parts, t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _CopyToShards.apply(x, self.transport)
        return nn.functional.linear(x, self.weight, self.bias)


class RowParallelLinear(nn.Module):
    """Input features ``[t*m/T, (t+1)*m/T)`` of a Linear; partial outputs summed by all-reduce."""

    def __init__(self, linear: nn.Linear, transport: Transport) -> None:
        super().__init__()
        t, parts = transport.rank, transport.world_size
        self.transport = transport
        self.weight = nn.Parameter(_chunk(linear.weight, 1, parts, t))
        # Replicated, added after the sum: its gradient is the same on every shard.
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _SumFromShards.apply(nn.functional.linear(x, self.weight), self.transport)
        return out if self.bias is None else out + self.bias


def parallel_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Names of the (column, row) Linear pairs of a Sequential: two Linears with only
    elementwise layers between them, taken greedily from the front."""
    layers = sequential_layers(model)
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(layers):
        name, layer = layers[i]
        if isinstance(layer, nn.Linear):
            j = i + 1
            while j < len(layers) and isinstance(layers[j][1], ELEMENTWISE):
                j += 1
            if j < len(layers) and isinstance(layers[j][1], nn.Linear):
                pairs.append((name, layers[j][0]))
                i = j + 1
                continue
        i += 1
    return pairs


def shard_dims(model: nn.Module, parts: int) -> dict[str, int | None]:
    """For each state key of ``model``: the dimension its tensor is split along across
    ``parts`` shards (None: whole on every shard). Checks the model can be split.

    Raises:
        ConfigError: no Linear pair to split, or a pair whose split size ``parts`` does not divide.
    """
    pairs = parallel_pairs(model)
    if not pairs:  # one line, whatever the model (a non-Sequential is refused by the caller)
        raise ConfigError(
            "model.tensor_parallel needs two Linear layers with only elementwise layers between "
            "them (column- then row-parallel); the model has none",
            help="use an MLP-like nn.Sequential (e.g. --set model.name=mlp)",
        )
    layers = dict(sequential_layers(model))
    dims: dict[str, int | None] = dict.fromkeys(model.state_dict())
    for col, row in pairs:
        hidden = layers[col].out_features  # type: ignore[union-attr]
        if hidden % parts:
            raise ConfigError(
                f"model.tensor_parallel={parts} does not divide the {hidden} features between "
                f"layers {col} and {row}",
                help=f"pick model.hidden divisible by {parts}",
            )
        dims[f"{col}.weight"] = 0
        if f"{col}.bias" in dims:
            dims[f"{col}.bias"] = 0
        dims[f"{row}.weight"] = 1
    return dims


def shard_sequential(
    model: nn.Module, *, transport: Transport, pairs: list[tuple[str, str]] | None = None
) -> nn.Sequential:
    """This agent's shard of a Sequential ``model`` across the tensor-parallel group
    ``transport``: a Sequential with the same layer names (and state keys), each pair of
    :func:`parallel_pairs` replaced by column- and row-parallel layers. The other layers are
    ``model``'s own modules.

    ``pairs``: the pairs to split, when ``model`` is one pipeline stage of a larger model
    (those of the whole model that lie in this stage, checked by :func:`shard_dims` on the
    whole model; a stage may hold none and is then whole on every shard)."""
    if pairs is None:
        shard_dims(model, transport.world_size)  # refuses what cannot be split
        pairs = parallel_pairs(model)
    cols = {c for c, _ in pairs}
    rows = {r for _, r in pairs}
    out = nn.Sequential()
    for name, layer in sequential_layers(model):
        if name in cols:
            layer = ColumnParallelLinear(layer, transport)  # type: ignore[arg-type]
        elif name in rows:
            layer = RowParallelLinear(layer, transport)  # type: ignore[arg-type]
        out.add_module(name, layer)
    return out
