"""The modelled time of each Transport op on emulated links, following its real message pattern.

Collectives are modelled as the algorithms gloo runs, step by step; a step ends when its
slowest message arrives, so one slow agent on the ring slows every step (as it does on a real
ring):

- ``all_reduce`` of B bytes over N agents: a ring reduce-scatter then a ring all-gather,
  2(N−1) steps, each sending B/N bytes to the next agent on the ring (Patarasuk & Yuan, 2009,
  "Bandwidth optimal all-reduce algorithms for clusters of workstations").
- ``reduce_scatter``: the first half, N−1 steps of B/N bytes.
- ``all_gather`` of B bytes per agent: N−1 ring steps of B bytes.
- ``all_to_all`` of B bytes (N chunks of B/N, chunk j to agent j): the pairwise exchange, N−1
  rounds; in round k every agent i sends its chunk to agent i+k, and the slowest edge of the
  round decides.
- ``all_gather_object``: what ``torch.distributed.all_gather_object`` does, an all-gather of the
  8-byte sizes then an all-gather of the pickled payload.
- ``broadcast`` of B bytes: the root sends B to each other agent over its own link, one after
  the other; the op ends when the last copy lands.
- ``send``/``recv``: one message on the link between the two agents.
- ``barrier``: a ring all-reduce of nothing, 2(N−1) latency-only steps.

A step on link e costs ``latency_e + bytes * 8 / bandwidth_e`` (see :class:`LinkProfile`).

Example (4 agents on ``wan-100``, all-reduce of 4 MB: 6 steps of 1 MB each, 25 ms + 80 ms):

    >>> from ddla.comm.links import LinkTable
    >>> table = LinkTable.build("wan-100", None, world_size=4)
    >>> round(op_seconds("all_reduce", 4_000_000, table=table, rank=0), 6)
    0.63
"""

from __future__ import annotations

from ddla.comm.links import LinkTable

#: Ops the model knows; the Transport's op names.
OPS = (
    "all_reduce",
    "reduce_scatter",
    "all_gather",
    "all_to_all",
    "all_gather_object",
    "broadcast",
    "send",
    "recv",
    "barrier",
)

#: Bytes of the size tensor ``all_gather_object`` exchanges first (one int64 per agent).
_OBJECT_SIZE_BYTES = 8


def ring_step_s(table: LinkTable, nbytes: float) -> float:
    """One ring step: every agent sends ``nbytes`` to the next; the slowest edge decides."""
    n = table.world_size
    return max(table.edge(i, (i + 1) % n).transfer_s(nbytes) for i in range(n))


def op_seconds(
    op: str,
    nbytes: float,
    *,
    table: LinkTable,
    rank: int,
    src: int | None = None,
    dst: int | None = None,
) -> float:
    """Modelled seconds ``rank`` spends in ``op`` moving ``nbytes`` (its own payload's size).

    ``src`` is the root of ``broadcast`` and the sender of ``recv``; ``dst`` the receiver of
    ``send``. With one agent, or on unshaped links, every op costs 0.

    Raises:
        ValueError: an op the model does not know, or a missing/self peer for send/recv.
    """
    n = table.world_size
    if op not in OPS:
        raise ValueError(f"link model: unknown op {op!r} (known: {', '.join(OPS)})")
    if n <= 1 or not table.shaped:
        return 0.0
    if op == "all_reduce":
        return 2 * (n - 1) * ring_step_s(table, nbytes / n)
    if op == "reduce_scatter":
        return (n - 1) * ring_step_s(table, nbytes / n)
    if op == "all_gather":
        return (n - 1) * ring_step_s(table, nbytes)
    if op == "all_to_all":
        return sum(
            max(table.edge(i, (i + k) % n).transfer_s(nbytes / n) for i in range(n))
            for k in range(1, n)
        )
    if op == "all_gather_object":
        return (n - 1) * (ring_step_s(table, _OBJECT_SIZE_BYTES) + ring_step_s(table, nbytes))
    if op == "barrier":
        return 2 * (n - 1) * ring_step_s(table, 0)
    if op == "broadcast":
        root = 0 if src is None else src
        peers = [d for d in range(n) if d != root]
        serial = sum(nbytes * 8.0 / table.edge(root, d).bandwidth_bps for d in peers)
        return max(table.edge(root, d).latency_s for d in peers) + serial
    peer = dst if op == "send" else src
    if peer is None or peer == rank:
        raise ValueError(f"link model: {op} needs a peer other than rank {rank}, got {peer}")
    a, b = (rank, peer) if op == "send" else (peer, rank)
    return table.edge(a, b).transfer_s(nbytes)
