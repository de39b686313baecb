"""Merge models into one: (weighted) parameter averaging of state dicts, no peers needed.

Merging live agents' models over the Transport is :meth:`ddla.aggregate.Aggregator.average_state`.

Example (pure function, no peers needed):
    >>> import torch
    >>> a = {"w": torch.tensor([1.0, 2.0])}; b = {"w": torch.tensor([3.0, 6.0])}
    >>> average_state_dicts([a, b], weights=[1, 3])["w"]
    tensor([2.5000, 5.0000])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
