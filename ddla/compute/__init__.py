"""How one step runs on an agent, by role: a data-parallel replica (whose model may be a
tensor-parallel shard), a pipeline stage, or a federated client host (``COMPUTES``).

Example:
    >>> from ddla.compute import COMPUTES
    >>> sorted(COMPUTES)
    ['federated', 'pipeline', 'replica']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ddla.compute.base import Compute
from ddla.compute.factory import build_compute
from ddla.compute.replica import Replica

if TYPE_CHECKING:
    from ddla.compute.federated import FederatedRound
    from ddla.compute.pipeline import PipelineCompute

# The pipeline compute imports torch.distributed.pipelining, which imports torch._dynamo and
# DTensor: 1.7 s of every agent's start-up. Only pipeline stages need it, so it (and the
# federated host) load on first use; the factory imports them the same way.
_LAZY = {
    "FederatedRound": "ddla.compute.federated",
    "PipelineCompute": "ddla.compute.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "COMPUTES":
        computes: dict[str, type[Compute]] = {
            "replica": Replica,
            "pipeline": __getattr__("PipelineCompute"),
            "federated": __getattr__("FederatedRound"),
        }
        return computes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COMPUTES", "Compute", "FederatedRound", "PipelineCompute", "Replica", "build_compute"]
