"""``diloco``: H inner steps (AdamW), then an outer Nesterov step on the averaged pseudo-gradient.

Douillard et al. 2023, "DiLoCo: Distributed Low-Communication Training of Language Models"
(arXiv 2311.08105). Every ``sync.every`` inner steps each agent sends the pseudo-gradient
(parameters at the last sync minus now); their mean, compressed with ``sync.compress``, is
applied to the global copy by SGD with Nesterov momentum (``sync.outer_lr`` 0.7,
``sync.outer_momentum`` 0.9, the paper's values) and every agent restarts from it. The inner
optimizer's state is kept across rounds (it is saved by the agent's checkpoint); the outer
optimizer's state and the global copy are in :meth:`state_dict`.

With ``sync.overlap`` τ ≥ 1 the outer update is applied τ inner steps after the pseudo-gradient
was sent (the "one-step delayed" update, τ = 1, of Streaming DiLoCo, Douillard et al. 2025,
arXiv 2501.18512, with the whole model as one fragment), merged as ``mix * local + (1 - mix) *
global``, while the transfer runs on a communication thread (``sync.background``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ddla.sync.periodic import PeriodicOuterSync


class DiLoCo(PeriodicOuterSync):
    """DiLoCo with any compressor; one agent runs the same outer loop with nothing to send.

    Example:
        >>> from ddla.sync import SyncConfig, STRATEGIES
        >>> STRATEGIES["diloco"].default_optimizer
        'adamw'
        >>> SyncConfig(strategy="diloco", every=50, compress="int4").outer_momentum
        0.9
    """

    name: ClassVar[str] = "diloco"
    default_optimizer: ClassVar[str] = "adamw"

    def settings(self) -> dict[str, Any]:
        c = self.config
        return {"lr": c.outer_lr, "momentum": c.outer_momentum, "fragments": 1,
                "overlap": c.overlap, "mix": c.mix}  # fmt: skip
