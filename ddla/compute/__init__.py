"""How one step runs on an agent, by role: a data-parallel replica (whose model may be a
tensor-parallel shard), a pipeline stage, or a federated client host (``COMPUTES``).

Example:
    >>> from ddla.compute import COMPUTES
    >>> sorted(COMPUTES)
    ['federated', 'pipeline', 'replica']
"""

from __future__ import annotations

from ddla.compute.base import Compute
from ddla.compute.factory import build_compute
from ddla.compute.federated import FederatedRound
from ddla.compute.pipeline import PipelineCompute
from ddla.compute.replica import Replica

COMPUTES: dict[str, type[Compute]] = {
    "replica": Replica,
    "pipeline": PipelineCompute,
    "federated": FederatedRound,
}

__all__ = ["COMPUTES", "Compute", "FederatedRound", "PipelineCompute", "Replica", "build_compute"]
