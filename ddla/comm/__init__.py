"""Communication between agents: the Transport, its byte model and its accounting.

Only this package imports ``torch.distributed`` for communication; strategies, aggregation and
merging talk to peers through a :class:`Transport` so every byte is counted.

Example:
    >>> from ddla.comm import Transport, ring_bytes
    >>> ring_bytes("all_reduce", 1000, world_size=2, rank=0)
    (1000, 1000)
"""

from ddla.comm.clock import CLOCKS, Clock, RealClock, VirtualClock
from ddla.comm.linkmodel import op_seconds
from ddla.comm.links import PROFILES, LinkProfile, LinkTable, parse_profile
from ddla.comm.p2p import P2PWork
from ddla.comm.ring import ring_bytes
from ddla.comm.stats import CommStats
from ddla.comm.transport import Transport

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
