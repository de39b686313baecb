"""Merge agents' models into one: (weighted) parameter averaging over the Transport.

Example (pure function, no peers needed):
    >>> import torch
    >>> a = {"w": torch.tensor([1.0, 2.0])}; b = {"w": torch.tensor([3.0, 6.0])}
    >>> average_state_dicts([a, b], weights=[1, 3])["w"]
    tensor([2.5000, 5.0000])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ddla.comm import Transport


def average_state_dicts(
    states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """Weighted mean of floating-point entries; integer buffers are taken from the first."""
    w = torch.tensor(weights if weights is not None else [1.0] * len(states), dtype=torch.float64)
    w = w / w.sum()
    out: dict[str, torch.Tensor] = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            acc = sum(wi * s[key].double() for wi, s in zip(w, states, strict=True))
            out[key] = acc.to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def averaged_copy(model: torch.nn.Module, transport: Transport, *, tag: str = "eval") -> dict:
    """The mean of every agent's floating-point state, as a new state dict (collective call).

    All entries travel in one flat buffer: one all-reduce instead of one per tensor.
    """
    state = model.state_dict()
    keys = [k for k, v in state.items() if v.is_floating_point()]
    merged = {k: v.detach().clone() for k, v in state.items()}
    if transport.world_size == 1 or not keys:
        return merged
    flat = torch.cat([state[k].detach().reshape(-1).float() for k in keys])
    transport.all_reduce(flat, op="sum", tag=tag)
    flat /= transport.world_size
    offset = 0
    for k in keys:
        n = state[k].numel()
        merged[k] = flat[offset : offset + n].view_as(state[k]).to(state[k].dtype)
        offset += n
    return merged
