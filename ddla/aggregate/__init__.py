"""How many agents' updates become one: means (plain, weighted), the wire schemes for compressed
means, and secure (masked) aggregation as an explicit layer.

Example (one agent: nothing travels):

    >>> import torch
    >>> from ddla.aggregate import Aggregator
    >>> from ddla.comm import Transport
    >>> with Transport.single() as t:
    ...     Aggregator(t).mean([torch.tensor([1.0, 2.0])], weight=3.0)[0].tolist()
    [1.0, 2.0]
"""

from __future__ import annotations

from ddla.aggregate.aggregator import Aggregator, Protection
from ddla.aggregate.maskable import MASKABLE, refuse_unmaskable
from ddla.aggregate.wire import compressed_mean

__all__ = ["MASKABLE", "Aggregator", "Protection", "compressed_mean", "refuse_unmaskable"]
