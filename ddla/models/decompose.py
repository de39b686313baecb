"""Cutting a model into pipeline stages: consecutive layers of an ``nn.Sequential``.

A stage is an ``nn.Sequential`` of the original model's own modules under their original
names, so a stage's ``state_dict`` keys are the full model's keys (``"4.weight"``): assembling
the full model back is a union of the stages' states, and a stage's parameters are the very
tensors of the full model on the agent that holds it.

Splits are either automatic, balanced by parameter count (the contiguous partition that
minimises the largest stage, so per-agent parameter and optimizer memory is ~1/S), or manual:
the names of the modules that open stages 1..S-1.

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
    ...                       nn.Linear(8, 2))
    >>> plan_stages(model, 2)
    [['0', '1'], ['2', '3', '4']]
    >>> plan_stages(model, 2, split="4")
    [['0', '1', '2', '3'], ['4']]
    >>> list(stage_module(model, ['2', '3', '4']).state_dict())
    ['2.weight', '2.bias', '4.weight', '4.bias']
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ddla.errors import ConfigError


def sequential_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The top-level ``(name, module)`` layers of a Sequential model, in order; or those a
    model lists itself (``model.pipeline_layers()``, with ``model.pipeline_stage(names)``
    building a stage: the zoo's ``gpt`` does).

    Raises:
        ConfigError: the model is neither (its forward may not be a chain).
    """
    if hasattr(model, "pipeline_layers") and not isinstance(model, nn.Sequential):
        return list(model.pipeline_layers())
    if not isinstance(model, nn.Sequential):
        raise ConfigError(
            f"model decomposition needs an nn.Sequential, got {type(model).__name__}",
            help="build the model as nn.Sequential(...) of its layers (the zoo's mlp and cnn are)",
        )
    return list(model.named_children())


def balanced_split(weights: Sequence[float], parts: int) -> list[int]:
    """Start index of each of ``parts`` contiguous, non-empty groups of ``weights`` that
    minimise the largest group's sum (ties: the latest cuts, so a parameter-free layer such as
    a ReLU stays in the stage of the layer before it).

    Example:
        >>> balanced_split([4, 0, 4, 0, 1], 2)
        [0, 2]
    """
    n = len(weights)
    if not 1 <= parts <= n:
        raise ValueError(f"cannot cut {n} layers into {parts} non-empty groups")
    prefix: list[float] = [0.0]
    for w in weights:
        prefix.append(prefix[-1] + w)
    inf = float("inf")
    # best[k][i]: smallest possible largest sum when the first i layers form k groups.
    best: list[list[float]] = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0
    for k in range(1, parts + 1):
        for i in range(k, n - (parts - k) + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], prefix[i] - prefix[j])
                if cost <= best[k][i]:
                    best[k][i], cut[k][i] = cost, j
    starts, i = [], n
    for k in range(parts, 0, -1):
        i = cut[k][i]
        starts.append(i)
    return starts[::-1]


def plan_stages(
    model: nn.Module,
    stages: int,
    split: str = "auto",
    *,
    keep: Sequence[tuple[str, str]] = (),
    times: Sequence[float] | None = None,
) -> list[list[str]]:
    """Module names held by each of ``stages`` stages of a Sequential ``model``.

    ``split`` is ``auto`` (balanced by parameter count), ``time`` (balanced by ``times``, the
    measured seconds of each layer: see :func:`ddla.models.profile.agreed_layer_times`) or
    comma-separated module names, each the first layer of stages 1..S-1, in order. ``keep``:
    spans ``(first, last)`` of layers that must stay in one stage (tensor-parallel pairs,
    whose split activation may not cross a stage boundary); automatic splits cut only
    between them.

    Raises:
        ConfigError: more stages than layers (or than spans to cut between), a split point
            that names no layer, split points out of order or of the wrong number, a split
            point inside a kept span.
    """
    layers = sequential_layers(model)
    names = [name for name, _ in layers]
    if stages > len(layers):
        raise ConfigError(
            f"model.stages={stages} but the model has only {len(layers)} layers",
            help=f"use model.stages <= {len(layers)}",
        )
    # No stage may start strictly inside a kept span.
    inside = {i for a, b in keep for i in range(names.index(a) + 1, names.index(b) + 1)}
    mode = split.strip()
    if mode in ("", "auto", "time"):
        if mode == "time":
            if times is None or len(times) != len(layers):
                raise ValueError("split=time needs one measured time per layer")
            weights: list[float] = [float(t) for t in times]
        else:
            weights = [float(sum(p.numel() for p in m.parameters())) for _, m in layers]
        cuts = [i for i in range(len(names)) if i not in inside]  # where a stage may start
        if stages > len(cuts):
            raise ConfigError(
                f"model.stages={stages} but the model has only {len(cuts)} places to start a "
                "stage outside tensor-parallel pairs",
                help=f"use model.stages <= {len(cuts)}",
            )
        units = [sum(weights[a:b]) for a, b in itertools.pairwise([*cuts, len(names)])]
        starts = [cuts[i] for i in balanced_split(units, stages)]
    else:
        points = [p.strip() for p in split.split(",") if p.strip()]
        if len(points) != stages - 1:
            raise ConfigError(
                f"model.split names {len(points)} split points, model.stages={stages} needs "
                f"{stages - 1}",
                help="name the first layer of each stage after the first, e.g. model.split=4,8",
            )
        unknown = [p for p in points if p not in names]
        if unknown:
            raise ConfigError(
                f"model.split: {', '.join(unknown)} names no layer of the model",
                help=f"layers are {', '.join(names)}",
            )
        starts = [0] + [names.index(p) for p in points]
        if any(b <= a for a, b in itertools.pairwise(starts)):
            raise ConfigError(
                f"model.split={split!r}: split points must be in layer order, each after the "
                "previous (and not the first layer)",
                help=f"layers are {', '.join(names)}",
            )
        cut_in = [names[i] for i in starts if i in inside]
        if cut_in:
            raise ConfigError(
                f"model.split: {', '.join(cut_in)} is inside a tensor-parallel pair (column- "
                "then row-parallel Linear), whose split activation cannot leave its stage",
                help="start stages at a pair's first Linear or after its second",
            )
    bounds = [*starts, len(names)]
    return [names[a:b] for a, b in itertools.pairwise(bounds)]


def stage_module(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """A Sequential of ``model``'s layers ``names`` under their own names (shared modules),
    or the stage a model builds itself (``model.pipeline_stage``)."""
    if hasattr(model, "pipeline_stage") and not isinstance(model, nn.Sequential):
        return model.pipeline_stage(list(names))
    children = dict(model.named_children())
    return nn.Sequential(OrderedDict((name, children[name]) for name in names))
