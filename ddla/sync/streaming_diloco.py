"""``streaming_diloco``: DiLoCo with the model cut into P fragments synchronized at staggered
steps, optionally overlapping communication with τ inner steps.

Douillard et al. 2025, "Streaming DiLoCo with overlapping communication: Towards a Distributed
Free Lunch" (arXiv 2501.18512). Fragment f (rows of the parameters, see
:mod:`ddla.sync.fragments`) is sent every ``sync.every`` steps at offset ``f * H // P``, so each
sync moves about 1/P of the model (peak bandwidth / P, same total as DiLoCo). With
``sync.overlap`` τ > 0 the fragment's outer update is applied τ inner steps after it was sent,
merged as ``mix * local + (1 - mix) * global`` (the paper's α) with the local value that kept
training meanwhile. The transfer runs on a communication thread over a second process group
while the agent trains (``sync.background``, on by default with τ > 0;
:mod:`ddla.comm.background`), so on real links, and on the emulated ones of every clock, the
agent waits only for what τ steps of compute did not cover.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ddla.sync.periodic import PeriodicOuterSync


class StreamingDiLoCo(PeriodicOuterSync):
    """Streaming DiLoCo; with ``fragments=1`` and ``overlap=0`` it is exactly DiLoCo.

    Example:
        >>> from ddla.sync import SyncConfig
        >>> SyncConfig(strategy="streaming_diloco", every=100, fragments=4, overlap=5).mix
        0.5
    """

    name: ClassVar[str] = "streaming_diloco"
    default_optimizer: ClassVar[str] = "adamw"

    def settings(self) -> dict[str, Any]:
        c = self.config
        return {"lr": c.outer_lr, "momentum": c.outer_momentum, "fragments": c.fragments,
                "overlap": c.overlap, "mix": c.mix}  # fmt: skip
