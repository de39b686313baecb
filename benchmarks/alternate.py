"""Two sides measured in alternating rounds on a shared, noisy machine, and their medians.

Each round runs both sides, in the opposite order from the round before, so a burst of other
load hits both; the figures are per-step milliseconds (wall and CPU) and their median ratio.

Example:
    timed = alternate(("off", "on"), rounds=5, steps=200, measure=lambda side: run(side))
    figures = timed.summary()   # medians per side and the "b over a" ratios
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Alternated:
    """Per-step milliseconds of each side, every round (``wall[side][round]``)."""

    sides: tuple[str, str]
    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]

    def median(self, kind: str, side: str) -> float:
        return statistics.median((self.wall if kind == "wall" else self.cpu)[side])

    def ratio(self, kind: str) -> float:
        """Median of the second side over median of the first."""
        a, b = self.sides
        return self.median(kind, b) / self.median(kind, a)


def alternate(
    sides: tuple[str, str],
    *,
    rounds: int,
    steps: int,
    measure: Callable[[str], tuple[float, float]],
    report: Callable[[int, str, float, float], None] | None = None,
) -> Alternated:
    """Run ``measure(side) -> (wall_s, cpu_s)`` for both sides each round, alternating the
    order; ``report(round, side, wall_ms, cpu_ms)`` after each measurement (per step)."""
    wall: dict[str, list[float]] = {s: [] for s in sides}
    cpu: dict[str, list[float]] = {s: [] for s in sides}
    for r in range(rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            w, c = measure(side)
            wall[side].append(w / steps * 1e3)
            cpu[side].append(c / steps * 1e3)
            if report is not None:
                report(r, side, wall[side][-1], cpu[side][-1])
    return Alternated(sides, wall, cpu)
