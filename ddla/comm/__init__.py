"""Communication between agents: the Transport, its byte model and its accounting.

Only this package imports ``torch.distributed`` for communication; strategies, aggregation and
merging talk to peers through a :class:`Transport` so every byte is counted.

Example:
    >>> from ddla.comm import Transport, ring_bytes
    >>> ring_bytes("all_reduce", 1000, world_size=2, rank=0)
    (1000, 1000)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ddla.comm.clock import CLOCKS, Clock, RealClock, VirtualClock
from ddla.comm.linkmodel import op_seconds
from ddla.comm.links import PROFILES, LinkProfile, LinkTable, parse_profile
from ddla.comm.ring import ring_bytes
from ddla.comm.stats import CommStats

if TYPE_CHECKING:
    from ddla.comm.p2p import P2PWork
    from ddla.comm.transport import Transport

# The config (ddla.comm.config) imports this package for the link and clock tables; those are
# plain Python. The Transport and P2PWork import torch (1.5 s), so they load on first use: the
# launcher parses a run's config, and starts the warm agent server, before it pays for torch.
_LAZY = {"P2PWork": "ddla.comm.p2p", "Transport": "ddla.comm.transport"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CLOCKS",
    "PROFILES",
    "Clock",
    "CommStats",
    "LinkProfile",
    "LinkTable",
    "P2PWork",
    "RealClock",
    "Transport",
    "VirtualClock",
    "op_seconds",
    "parse_profile",
    "ring_bytes",
]
