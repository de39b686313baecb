"""How one step runs on an agent, by role: data-parallel replica today; pipeline stage,
tensor-parallel shard and federated client host plug in here (``COMPUTES``).

Example:
    >>> from ddla.compute import COMPUTES
    >>> sorted(COMPUTES)
    ['federated', 'replica']
"""

from __future__ import annotations

from ddla.compute.base import Compute
from ddla.compute.factory import build_compute
from ddla.compute.federated import FederatedRound
from ddla.compute.replica import Replica

COMPUTES: dict[str, type[Compute]] = {"replica": Replica, "federated": FederatedRound}

__all__ = ["COMPUTES", "Compute", "FederatedRound", "Replica", "build_compute"]
