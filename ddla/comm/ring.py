"""The byte model: how many payload bytes one agent sends and receives per op.

ddla counts bytes with a documented *ring model*, not by sniffing sockets, so that counts are
exact integers, identical on every run, and comparable across backends (gloo's real algorithm
choice depends on tensor size and world size). With ``B`` the payload bytes of the tensor on
one agent and ``N`` the number of agents:

============  ==============================  ==============================
op            bytes sent by this agent        bytes received by this agent
============  ==============================  ==============================
all_reduce    ``2*(N-1)*B // N``              ``2*(N-1)*B // N``
all_gather    ``(N-1)*B``                     ``(N-1)*B``
all_to_all    ``(N-1)*B // N``                ``(N-1)*B // N``
broadcast     root: ``(N-1)*B``; others: 0    root: 0; others: ``B``
send          ``B``                           0
recv          0                               ``B``
barrier       0                               0
============  ==============================  ==============================

all_reduce is a ring reduce-scatter followed by a ring all-gather: ``N-1`` steps each, every
step moving one ``B/N`` chunk to the next agent and receiving one from the previous. all_gather
forwards every other agent's block once around the ring. all_to_all cuts ``B`` into ``N`` equal
chunks and sends chunk ``j`` to agent ``j`` (keeping its own). broadcast is counted as the root
sending the tensor to each other agent once (the total any tree or ring must move). With
``N = 1`` nothing moves and every count is 0.

Link emulation reuses this function so that emulated delay follows the same message pattern.

Example:
    >>> ring_bytes("all_reduce", 400, world_size=4, rank=0)
    (600, 600)
    >>> ring_bytes("broadcast", 400, world_size=4, rank=2, src=0)
    (0, 400)
    >>> ring_bytes("all_to_all", 400, world_size=4, rank=1)
    (300, 300)
    >>> ring_bytes("all_gather", 400, world_size=1, rank=0)
    (0, 0)
"""

from __future__ import annotations

OPS = ("all_reduce", "all_gather", "all_to_all", "broadcast", "send", "recv", "barrier")


def ring_bytes(
    op: str, nbytes: int, world_size: int, rank: int, src: int | None = None
) -> tuple[int, int]:
    """Return ``(bytes_sent, bytes_received)`` for this ``rank`` under the ring model.

    ``src`` is the root of a broadcast and is required for ``op="broadcast"`` only.
    """
    if op not in OPS:
        raise ValueError(f"ring_bytes: unknown op {op!r}; expected one of {', '.join(OPS)}")
    if nbytes < 0 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"ring_bytes: need nbytes >= 0 and 0 <= rank < world_size, got nbytes={nbytes}, "
            f"rank={rank}, world_size={world_size}"
        )
    n, b = world_size, nbytes
    if n == 1 or op == "barrier":
        return 0, 0
    if op == "all_reduce":
        moved = 2 * (n - 1) * b // n
        return moved, moved
    if op == "all_gather":
        return (n - 1) * b, (n - 1) * b
    if op == "all_to_all":
        moved = (n - 1) * b // n
        return moved, moved
    if op == "broadcast":
        if src is None or not 0 <= src < n:
            raise ValueError(f"ring_bytes: broadcast needs 0 <= src < {n}, got src={src}")
        return ((n - 1) * b, 0) if rank == src else (0, b)
    if op == "send":
        return b, 0
    return 0, b  # recv
