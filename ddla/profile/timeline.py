"""From agents' ddla spans on one time axis to a timeline: compute, communication, waiting.

Pure functions on plain span dicts (``name``, ``start_s``, ``dur_s``, ``args``), so they are
tested without a process group. What is *waiting* (Horovod's timeline calls it negotiation):

- the explicit ``ddla.wait`` spans (an agent blocked on a peer outside a transfer);
- in a collective, the time from this agent's entry until the last member entered: no
  transfer can finish before every member has joined, so a fast agent's share of a collective
  with a straggler is waiting, not communication. The k-th collective of one group
  (``args.group``, the run's ranks) is the same call on every member (c10d requires that every
  member issues a group's collectives in the same order), so calls are matched by
  (op, group, k). Point-to-point transfers are not split: a receive's waiting and its transfer
  look alike from one end.

Compute is the exclusive time of ``ddla.compute`` spans: what is left once the communication
and waiting inside them are taken out (a DDP all-reduce overlapping backward counts as
communication where it runs).

Example:
    >>> a = [{"name": "ddla.comm.all_reduce", "start_s": 0.0, "dur_s": 1.0,
    ...       "args": {"op": "all_reduce", "group": [0, 1]}}]
    >>> b = [{"name": "ddla.comm.all_reduce", "start_s": 0.75, "dur_s": 0.25,
    ...       "args": {"op": "all_reduce", "group": [0, 1]}}]
    >>> [(s["kind"], s["dur_s"]) for s in segments({0: a, 1: b})[0]]
    [('wait', 0.75), ('comm', 0.25)]
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

#: Ops whose members enter together (matched across agents for straggler waits).
COLLECTIVES = frozenset(
    {"all_reduce", "reduce_scatter", "all_gather", "all_to_all", "all_gather_object",
     "broadcast", "barrier"}
)  # fmt: skip

Span = dict[str, Any]


def _kind(name: str) -> str | None:
    if name.startswith("ddla.comm."):
        return "comm"
    if name == "ddla.wait":
        return "wait"
    if name == "ddla.compute":
        return "compute"
    if name == "ddla.eval":
        return "eval"
    return None


def straggler_waits(spans: dict[int, list[Span]]) -> dict[tuple[int, int], float]:
    """Seconds each agent's collective waited for the last member: ``{(rank, i): s}``
    where ``i`` indexes ``spans[rank]``; calls some member did not record are left out."""
    calls: dict[tuple[str, tuple[int, ...], int], dict[int, int]] = defaultdict(dict)
    for rank, items in spans.items():
        seen: dict[tuple[str, tuple[int, ...]], int] = defaultdict(int)
        for i, s in sorted(enumerate(items), key=lambda p: p[1]["start_s"]):
            args = s.get("args") or {}
            op, group = args.get("op"), tuple(args.get("group") or ())
            if op not in COLLECTIVES or len(group) < 2 or "error" in args:
                continue
            k = seen[(op, group)]
            seen[(op, group)] += 1
            calls[(op, group, k)][rank] = i
    waits: dict[tuple[int, int], float] = {}
    for (_, group, _), members in calls.items():
        if set(members) != set(group):
            continue  # a member outside the window (or not profiled): no honest figure
        last = max(spans[r][i]["start_s"] for r, i in members.items())
        for r, i in members.items():
            s = spans[r][i]
            waits[(r, i)] = min(max(last - s["start_s"], 0.0), s["dur_s"])
    return waits


def segments(spans: dict[int, list[Span]]) -> dict[int, list[Span]]:
    """Per agent, the drawable pieces: ``{"kind": compute|eval|comm|wait, "start_s", "dur_s"}``.

    A collective becomes a wait piece (until the last member entered) and a comm piece;
    compute and evaluation spans stay whole (draw them first: comm and wait go over them).
    """
    waits = straggler_waits(spans)
    out: dict[int, list[Span]] = {}
    for rank, items in spans.items():
        pieces: list[Span] = []
        for i, s in enumerate(items):
            kind = _kind(s["name"])
            if kind is None:
                continue
            w = waits.get((rank, i), 0.0)
            if w > 0:
                pieces.append({"kind": "wait", "start_s": s["start_s"], "dur_s": w})
            if s["dur_s"] - w > 0:
                pieces.append({"kind": kind, "start_s": s["start_s"] + w, "dur_s": s["dur_s"] - w})
        out[rank] = pieces
    return out


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def totals(spans: dict[int, list[Span]]) -> dict[int, dict[str, float]]:
    """Per agent: ``compute_s`` and ``eval_s`` (exclusive), ``comm_s``, ``wait_s``,
    ``link_modelled_s``,
    ``link_measured_s`` (train transfers, waiting taken out), train bytes sent/received."""
    pieces = segments(spans)
    waits = straggler_waits(spans)
    out: dict[int, dict[str, float]] = {}
    for rank, items in spans.items():
        busy = [p for p in pieces[rank] if p["kind"] in ("comm", "wait")]
        comm = _union(
            [(p["start_s"], p["start_s"] + p["dur_s"]) for p in busy if p["kind"] == "comm"]
        )
        wait = _union(
            [(p["start_s"], p["start_s"] + p["dur_s"]) for p in busy if p["kind"] == "wait"]
        )
        busy_iv = [(p["start_s"], p["start_s"] + p["dur_s"]) for p in busy]
        own = {"ddla.compute": 0.0, "ddla.eval": 0.0}
        for s in items:
            if s["name"] in own:
                a, b = s["start_s"], s["start_s"] + s["dur_s"]
                inside = [(max(x, a), min(y, b)) for x, y in busy_iv if y > a and x < b]
                own[s["name"]] += s["dur_s"] - _union(inside)
        compute, evaluation = own["ddla.compute"], own["ddla.eval"]
        row = {"compute_s": compute, "eval_s": evaluation, "comm_s": comm, "wait_s": wait,
               "link_modelled_s": 0.0,
               "link_measured_s": 0.0, "bytes_sent": 0, "bytes_received": 0}  # fmt: skip
        for i, s in enumerate(items):
            args = s.get("args") or {}
            if _kind(s["name"]) != "comm" or args.get("tag") != "train":
                continue
            row["link_modelled_s"] += float(args.get("link_modelled_s") or 0.0)
            row["link_measured_s"] += s["dur_s"] - waits.get((rank, i), 0.0)
            row["bytes_sent"] += int(args.get("bytes_sent") or 0)
            row["bytes_received"] += int(args.get("bytes_received") or 0)
        out[rank] = row
    return out
