"""DP-FedAvg's Gaussian mechanism and its accountant (McMahan, Ramage, Talwar & Zhang 2018,
"Learning Differentially Private Recurrent Language Models", ICLR, arXiv 1710.06963).

Each round samples every client independently with probability q (Poisson), clips each
update to L2 norm S, and releases ``(sum of clipped updates + N(0, σ² S² I)) / (q M)``
(the fixed-denominator estimator: adding or removing one client changes the sum by at most
S). That is the sampled Gaussian mechanism with noise multiplier σ; T rounds compose. The
(ε, δ) is computed by Google's ``dp-accounting`` (its RDP accountant, over integer orders,
``PoissonSampledDpEvent(q, GaussianDpEvent(σ))`` composed T times); nothing here is a
hand-written accountant.

Example:
    >>> acc = Accountant(q=0.1, noise=1.0, delta=1e-5)
    >>> round(acc.epsilon(rounds=20), 3)
    4.261
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import dp_accounting

# dp_accounting is imported where it is used: it pulls in scipy (~0.5 s), which every agent
# would pay at import time although only runs with fed.dp use the accountant.

#: Rényi orders: integers, where the sampled Gaussian's RDP is computed exactly.
ORDERS = tuple(range(2, 257))


def dp_event(q: float, noise: float) -> dp_accounting.DpEvent:
    """One round: the Poisson-sampled Gaussian mechanism (rate q, noise multiplier σ)."""
    import dp_accounting

    return dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(noise))


class Accountant:
    """ε after T rounds of DP-FedAvg at sampling rate ``q``, noise multiplier ``noise``."""

    def __init__(self, *, q: float, noise: float, delta: float) -> None:
        self.q, self.noise, self.delta = q, noise, delta
        from dp_accounting.rdp import RdpAccountant

        self._acc = RdpAccountant(list(ORDERS))
        self._rounds = 0

    def epsilon(self, *, rounds: int) -> float:
        """ε(δ) after ``rounds`` rounds (composes only the rounds not yet composed, so a resumed
        run reports what the uninterrupted one would); ``inf`` when σ = 0."""
        if rounds < self._rounds:
            from dp_accounting.rdp import RdpAccountant

            self._acc, self._rounds = RdpAccountant(list(ORDERS)), 0
        if rounds > self._rounds:
            self._acc.compose(dp_event(self.q, self.noise), rounds - self._rounds)
            self._rounds = rounds
        return float(self._acc.get_epsilon(self.delta)) if rounds else 0.0


def noise_share(dim: int, *, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise of ``std`` per coordinate, from a fresh OS-seeded generator unless one is
    given (a predictable seed would let anyone subtract the noise)."""
    if generator is None:
        generator = torch.Generator().manual_seed(secrets.randbits(63))
    return std * torch.randn(dim, generator=generator)
