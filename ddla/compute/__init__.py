"""How one step runs on an agent, by role: data-parallel replica today; pipeline stage,
tensor-parallel shard and federated client host plug in here (``COMPUTES``).

Example:
    >>> from ddla.compute import COMPUTES
    >>> sorted(COMPUTES)
    ['replica']
"""

from __future__ import annotations

from ddla.compute.base import Compute
from ddla.compute.replica import Replica

COMPUTES: dict[str, type[Compute]] = {"replica": Replica}

__all__ = ["COMPUTES", "Compute", "Replica"]
