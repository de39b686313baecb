"""Chrome traces out of a profiling window: ddla's facts into its spans, agents on one axis.

torch.profiler measures ddla's annotations but keeps no payload facts (``record_function``'s
own ``args`` string never reaches the exported trace; measured, torch 2.13), so ddla's facts
are written into the exported events here: the k-th ``ddla.*`` event of a name is the k-th
span of that name ddla opened (spans of one name open in the order ddla recorded them).

One time axis: a trace's event times are microseconds after its ``baseTimeNanoseconds``, on
the host's clock. Agents on one host share that clock, so their traces are placed as they
are; the end of the alignment barrier each agent passes when its window opens
(``ddla.align``) is the common instant that measures what is left (the skew of a barrier's
release, tens of microseconds on loopback). Agents on several hosts are shifted so that
their ``ddla.align`` ends coincide (good to one message latency; NTP-grade clocks are not
assumed). The merged trace records which rule it used and every agent's shift.

Example:
    >>> trace = {"traceEvents": [{"ph": "X", "cat": "user_annotation", "name": "ddla.compute",
    ...                           "ts": 10.0, "dur": 5.0, "args": {}}]}
    >>> from ddla.profile.spans import SpanRecord
    >>> enrich(trace, [SpanRecord("ddla.compute", 0, {"step": 7})])
    0
    >>> trace["traceEvents"][0]["args"]["step"]
    7
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

from ddla.profile.spans import SpanRecord


def ddla_events(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """The trace's complete ``ddla.*`` annotation events, in time order."""
    events = [
        e
        for e in trace.get("traceEvents", [])
        if e.get("ph") == "X" and str(e.get("name", "")).startswith("ddla.")
    ]
    return sorted(events, key=lambda e: float(e["ts"]))


def enrich(trace: dict[str, Any], records: list[SpanRecord]) -> int:
    """Write each span's facts into its event's ``args``; return how many did not match."""
    by_name: dict[str, list[SpanRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.seq):
        by_name[r.name].append(r)
    events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in ddla_events(trace):
        events[e["name"]].append(e)
    unmatched = 0
    for name in set(by_name) | set(events):
        mine, theirs = by_name.get(name, []), events.get(name, [])
        unmatched += abs(len(mine) - len(theirs))
        for record, event in zip(mine, theirs, strict=False):
            event.setdefault("args", {}).update(record.args)
    return unmatched


def _abs_us(trace: dict[str, Any], ts: float) -> float:
    return float(trace.get("baseTimeNanoseconds", 0)) / 1000.0 + float(ts)


def align_end_us(trace: dict[str, Any]) -> float:
    """The absolute time (µs) this agent left its alignment barrier."""
    marks = [e for e in ddla_events(trace) if e["name"] == "ddla.align"]
    if not marks:
        raise ValueError("trace has no ddla.align span (not written by a ddla profile)")
    e = marks[0]
    return _abs_us(trace, e["ts"]) + float(e.get("dur", 0.0))


def alignment(traces: list[dict[str, Any]]) -> dict[str, Any]:
    """How the agents' traces go on one axis: ``rule``, per-agent ``shift_us``, residual skew."""
    ends = [align_end_us(t) for t in traces]
    hosts = {t.get("host_name") for t in traces}
    one_host = len(hosts) == 1 and None not in hosts
    if one_host:
        shifts = [0.0] * len(traces)
        rule = "one host: shared clock, traces placed as recorded"
    else:
        shifts = [ends[0] - end for end in ends]
        rule = "several hosts: shifted so every agent's ddla.align barrier ends together"
    aligned = [end + s for end, s in zip(ends, shifts, strict=True)]
    return {
        "rule": rule,
        "shift_us": shifts,
        "align_skew_us": max(aligned) - min(aligned),
        "t0_us": min(aligned),
    }


def merge(traces: list[dict[str, Any]]) -> dict[str, Any]:
    """One Chrome trace of all agents (agent ``i`` is process ``i``) on one time axis."""
    how = alignment(traces)
    t0 = how["t0_us"]
    events: list[dict[str, Any]] = []
    for rank, (trace, shift) in enumerate(zip(traces, how["shift_us"], strict=True)):
        events.append({"ph": "M", "name": "process_name", "pid": rank, "tid": 0,
                       "args": {"name": f"agent {rank}"}})  # fmt: skip
        events.append({"ph": "M", "name": "process_sort_index", "pid": rank, "tid": 0,
                       "args": {"sort_index": rank}})  # fmt: skip
        for e in trace.get("traceEvents", []):
            if e.get("ph") == "M" and e.get("name") in ("process_name", "process_sort_index"):
                continue
            e = copy.copy(e)
            e["pid"] = rank
            if "ts" in e:
                e["ts"] = _abs_us(trace, e["ts"]) + shift - t0
            events.append(e)
    return {
        "schemaVersion": 1,
        "displayTimeUnit": "ms",
        "baseTimeNanoseconds": int(t0 * 1000),
        "ddla": {"alignment": how, "agents": [t.get("ddla", {}) for t in traces]},
        "traceEvents": events,
    }


def agent_spans(merged: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """The merged trace's ddla spans per agent, in seconds on its axis (for the timeline)."""
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in ddla_events(merged):
        out[int(e["pid"])].append(
            {
                "name": e["name"],
                "start_s": float(e["ts"]) / 1e6,
                "dur_s": float(e.get("dur", 0.0)) / 1e6,
                "args": {
                    k: v
                    for k, v in (e.get("args") or {}).items()
                    if k not in ("External id", "Record function id", "Ev Idx")
                },
            }
        )
    return dict(out)
