"""Fusion methods: how ``ddla merge`` turns several compatible models into one.

* ``average`` — the uniform mean of every floating-point tensor (model soup, "uniform").
* ``weighted`` — the mean weighted by each model's training samples (``samples`` in its
  ``model.json``), FedAvg's weighting applied once at the end.
* ``ensemble`` — no parameter fusion: the mean of the members' predicted probabilities
  (:class:`~ddla.models.fusion.ensemble.Ensemble`).
* ``greedy-soup`` — Wortsman et al. 2022, "Model soups: averaging weights of multiple
  fine-tuned models improves accuracy without increasing inference time" (ICML, Algorithm 1):
  sort the models by held-out accuracy, start from the best, and add each next one to the
  uniform average only if the soup's held-out accuracy does not fall.
* ``best`` — the single model with the highest held-out accuracy.

Held-out accuracy is measured on data the caller keeps apart from the reported test rows.

Example (average of two linear models):
    >>> import torch
    >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> avg = averaged([a, b])
    >>> torch.equal(avg.weight, (a.weight + b.weight) / 2)
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ddla.errors import DataError
from ddla.models.fusion.ensemble import Ensemble
from ddla.models.fusion.inputs import Member
from ddla.models.merge import average_state_dicts

METHODS = ("average", "weighted", "ensemble", "greedy-soup", "best")

#: held-out accuracy of a module
Score = Callable[[torch.nn.Module], float]


@dataclass(kw_only=True)
class Fused:
    """The fused module and which inputs went into it (with their weights)."""

    module: torch.nn.Module
    chosen: list[str]
    weights: list[float] = field(default_factory=list)
    steps: list[dict[str, object]] = field(default_factory=list)
    """greedy-soup: each candidate, the soup's held-out accuracy with it, and whether it stayed."""

    @property
    def ensemble(self) -> bool:
        return isinstance(self.module, Ensemble)


def averaged(
    modules: Sequence[torch.nn.Module], weights: Sequence[float] | None = None
) -> torch.nn.Module:
    """A copy of the first module holding the (weighted) mean of all modules' states."""
    out = copy.deepcopy(modules[0])
    out.load_state_dict(average_state_dicts([m.state_dict() for m in modules], weights))
    return out


def _sample_weights(members: Sequence[Member]) -> list[float]:
    weights = []
    for m in members:
        n = m.meta.get("samples")
        if not isinstance(n, int) or n <= 0:
            raise DataError(
                f"--method weighted: {m.name} records no training sample count",
                help="its model.json lacks 'samples' (written by ddla run); use --method average",
            )
        weights.append(float(n))
    return weights


def fuse(method: str, members: Sequence[Member], *, score: Score) -> Fused:
    """Fuse ``members`` with ``method`` (one of :data:`METHODS`); ``score`` is held-out
    accuracy, used by ``greedy-soup`` and ``best``."""
    modules = [m.module for m in members]
    names = [m.name for m in members]
    if method == "average":
        return Fused(module=averaged(modules), chosen=names, weights=[1.0] * len(names))
    if method == "weighted":
        weights = _sample_weights(members)
        return Fused(module=averaged(modules, weights), chosen=names, weights=weights)
    if method == "ensemble":
        return Fused(
            module=Ensemble([copy.deepcopy(m) for m in modules]),
            chosen=names,
            weights=[1.0] * len(names),
        )
    scores = [score(m) for m in modules]
    order = sorted(range(len(members)), key=lambda i: -scores[i])  # stable: ties keep input order
    if method == "best":
        i = order[0]
        return Fused(module=copy.deepcopy(modules[i]), chosen=[names[i]], weights=[1.0])
    if method == "greedy-soup":
        soup = [order[0]]
        best = scores[order[0]]
        steps: list[dict[str, object]] = [
            {"model": names[order[0]], "heldout_accuracy": best, "kept": True}
        ]
        for i in order[1:]:
            trial = score(averaged([modules[j] for j in [*soup, i]]))
            kept = trial >= best
            steps.append({"model": names[i], "heldout_accuracy": trial, "kept": kept})
            if kept:
                soup.append(i)
                best = trial
        return Fused(
            module=averaged([modules[j] for j in soup]),
            chosen=[names[j] for j in soup],
            weights=[1.0] * len(soup),
            steps=steps,
        )
    raise DataError(f"unknown merge method {method!r}", help=f"choose one of: {', '.join(METHODS)}")
