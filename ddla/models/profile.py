"""Measured time per layer, for pipeline splits balanced by time (``model.split=time``).

Parameter count is a poor proxy for a layer's cost when layers differ in kind (a convolution
over a large image has few parameters and much work; an embedding has many and little), so
``model.split=time`` times each top-level layer's forward and backward on a sample batch and
cuts the model where those times balance. Each agent measures on its own CPU; the agents then
agree on one set of times (every agent's list gathered, the per-layer median taken: the same
inputs on every agent, so the same plan, which a decomposed run needs to the last layer).

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> times = layer_times(model, torch.randn(4, 8), repeats=2)
    >>> len(times) == 3 and all(t > 0 for t in times)
    True
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

import torch

from ddla.models.decompose import sequential_layers

if TYPE_CHECKING:
    from ddla.comm import Transport


def layer_times(model: torch.nn.Module, example: torch.Tensor, *, repeats: int = 5) -> list[float]:
    """Median seconds of each top-level layer's forward plus backward on ``example`` (one
    warm-up pass first). The model is left as it was: gradients cleared, buffers (e.g.
    BatchNorm statistics) and the random state restored."""
    layers = [m for _, m in sequential_layers(model)]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    samples: list[list[float]] = [[] for _ in layers]
    with torch.random.fork_rng(devices=[]):
        for rep in range(repeats + 1):
            x = example
            for i, layer in enumerate(layers):
                inp = x.detach().requires_grad_(x.is_floating_point())
                start = time.perf_counter()
                y = layer(inp)
                if y.requires_grad:
                    y.backward(torch.ones_like(y))
                if rep:  # the first pass warms up allocator and kernels
                    samples[i].append(time.perf_counter() - start)
                x = y.detach()
    for p in model.parameters():
        p.grad = None
    model.load_state_dict(buffers)
    # A parameter-free layer still costs something; never 0 (ties would be arbitrary).
    return [max(statistics.median(s), 1e-9) for s in samples]


def agreed_layer_times(
    model: torch.nn.Module, example: torch.Tensor, transport: Transport, *, repeats: int = 5
) -> list[float]:
    """:func:`layer_times` measured on every agent, then the per-layer median of all agents'
    measurements: identical on every agent (collective, tag ``control``)."""
    mine = layer_times(model, example, repeats=repeats)
    every = transport.all_gather_object(mine, tag="control")
    return [statistics.median(agent[i] for agent in every) for i in range(len(mine))]
