"""An ensemble model: the mean of its members' predicted probabilities.

Its forward returns ``log(mean_i softmax(member_i(x)))``: the log of a probability vector, so
``argmax`` is the ensemble's class and cross-entropy on it is the ensemble's negative
log-likelihood (softmax of log-probabilities that sum to 1 gives them back); every evaluation
path that takes logits therefore scores the ensemble unchanged. Saved like any model
(``model.safetensors`` keys ``members.I.<key>``, ``model.json`` ``"ensemble": {"members": N}``)
and rebuilt by :func:`ddla.models.load_model`, so ``ddla eval`` loads it.

Example:
    >>> import torch
    >>> a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    >>> e = Ensemble([a, b])
    >>> x = torch.randn(4, 3)
    >>> mean = (a(x).softmax(-1) + b(x).softmax(-1)) / 2
    >>> torch.allclose(e(x).exp(), mean)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class Ensemble(torch.nn.Module):
    """Members' probabilities averaged; forward gives their log (see the module docstring)."""

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m(x).softmax(dim=-1) for m in self.members]).mean(dim=0)
        # log of 0 would be -inf, and cross-entropy of it NaN; the smallest normal float is
        # below any probability a float32 softmax of finite logits produces for the true class.
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
