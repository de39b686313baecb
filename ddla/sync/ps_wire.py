"""The parameter server's messages: a fixed 6-integer header, then (maybe) a byte body.

Every message is a header ``[kind, clock, nbytes, time, a, b]`` (int64; ``time`` is the
sender's clock reading as float64 bits) on one backend channel, and, when ``nbytes > 0``, a body
of that many bytes on the next channel. A server receives headers from any worker (gloo's
any-source receive) and then the body from that worker, so variable-size compressed pushes
need no fixed buffer. Headers travel under the ``control`` tag (48 bytes; their latency is the
body's, the two travel together), bodies under ``train``: the strategy's bytes are its pushed
updates and pulled parameters.

Example:
    >>> h = header(PUSH, clock=3, nbytes=10, time=1.5, a=2)
    >>> parse(h)
    Message(kind=1, clock=3, nbytes=10, time=1.5, a=2, b=0)
"""

from __future__ import annotations

from typing import NamedTuple

import torch

#: Worker -> server.
PUSH, DONE, PULL = 1, 2, 3
#: Server -> worker: parameters of the shard, or the run cannot go on (``a`` names the culprit).
PARAMS, ABORT = 10, 11

#: Backend channels (gloo message tags) of requests and replies, header and body.
REQUEST, REQUEST_BODY, REPLY, REPLY_BODY = 5301, 5302, 5303, 5304


class Message(NamedTuple):
    kind: int
    clock: int
    nbytes: int
    time: float
    a: int
    b: int


def header(kind: int, *, clock: int = 0, nbytes: int = 0, time: float = 0.0, a: int = 0,
           b: int = 0) -> torch.Tensor:  # fmt: skip
    """The header tensor of a message."""
    bits = int(torch.tensor([time], dtype=torch.float64).view(torch.int64).item())
    return torch.tensor([kind, clock, nbytes, bits, a, b], dtype=torch.int64)


def parse(h: torch.Tensor) -> Message:
    """The fields of a received header."""
    v = [int(x) for x in h.tolist()]
    t = float(torch.tensor([v[3]], dtype=torch.int64).view(torch.float64).item())
    return Message(v[0], v[1], v[2], t, v[4], v[5])


def empty_header() -> torch.Tensor:
    """A buffer to receive a header into."""
    return torch.zeros(6, dtype=torch.int64)


def flat_bytes(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Parameters as one fp32 byte buffer (a reply body)."""
    return torch.cat([t.detach().reshape(-1).float() for t in tensors]).view(torch.uint8)


def unflatten(body: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    """A reply body back into tensors shaped as ``like``."""
    flat = body.view(torch.float32)
    out, offset = [], 0
    for t in like:
        out.append(flat[offset : offset + t.numel()].view(t.shape))
        offset += t.numel()
    return out
