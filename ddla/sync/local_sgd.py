"""``local_sgd``: each agent steps its own optimizer; parameters are averaged every H steps.

Local SGD / periodic model averaging (Stich 2019, "Local SGD Converges Fast and Communicates
Little", arXiv 1805.09767; Lin et al. 2020, arXiv 1808.07217). Implemented as DiLoCo with outer
lr 1 and no momentum: the mean of the pseudo-gradients ``global - local_i`` applied with lr 1
gives exactly the mean of the agents' parameters, and the compressor (if any) sees the small
per-period change rather than the parameters themselves, which is what makes int4 or top-k
usable. Each agent's optimizer state (e.g. momentum) stays local.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ddla.sync.periodic import PeriodicOuterSync


class LocalSGD(PeriodicOuterSync):
    """Average parameters every ``sync.every`` steps.

    Example:
        >>> import torch
        >>> from ddla.comm import Transport
        >>> from ddla.sync import SyncConfig, build_strategy
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> with Transport.single() as t:
        ...     s = build_strategy(SyncConfig(strategy="local_sgd", every=2), transport=t,
        ...                        model=model, optimizer=opt)
        ...     for _ in range(4):
        ...         model(torch.randn(8, 4)).sum().backward(); opt.step(); opt.zero_grad()
        ...     s.finish(); s.close()
        >>> s.last_sync
        [4]
    """

    name: ClassVar[str] = "local_sgd"
    default_optimizer: ClassVar[str] = "sgd"

    def settings(self) -> dict[str, Any]:
        return {"lr": 1.0, "momentum": 0.0, "fragments": 1, "overlap": 0, "mix": 0.0}
