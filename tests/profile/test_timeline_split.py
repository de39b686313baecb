"""The timeline's split of agents' spans into compute, communication and waiting."""

from __future__ import annotations

import pytest

from ddla.profile.export import alignment, merge
from ddla.profile.timeline import segments, straggler_waits, totals


def _span(name: str, start: float, dur: float, **args) -> dict:
    return {"name": name, "start_s": start, "dur_s": dur, "args": args}


def _ar(start: float, dur: float, group=(0, 1), **args) -> dict:
    return _span("ddla.comm.all_reduce", start, dur, op="all_reduce", group=list(group),
                 tag="train", **args)  # fmt: skip


def test_a_straggler_makes_the_others_wait_in_a_collective() -> None:
    # Agent 1 computes 3 s longer and enters the all-reduce at t=4; agent 0 entered at t=1.
    spans = {
        0: [_span("ddla.compute", 0.0, 1.0), _ar(1.0, 3.5, bytes_sent=40, link_modelled_s=0.4)],
        1: [_span("ddla.compute", 0.0, 4.0), _ar(4.0, 0.5, bytes_sent=40, link_modelled_s=0.4)],
    }
    assert straggler_waits(spans) == {(0, 1): 3.0, (1, 1): 0.0}
    t = totals(spans)
    assert t[0]["wait_s"] == pytest.approx(3.0) and t[0]["comm_s"] == pytest.approx(0.5)
    assert t[1]["wait_s"] == 0.0 and t[1]["compute_s"] == pytest.approx(4.0)
    # Measured link time leaves the waiting out; modelled is the spans' own figure.
    assert t[0]["link_measured_s"] == pytest.approx(0.5) and t[0]["link_modelled_s"] == 0.4
    assert t[0]["bytes_sent"] == 40
    kinds = [(p["kind"], p["start_s"], p["dur_s"]) for p in segments(spans)[0]]
    assert kinds == [("compute", 0.0, 1.0), ("wait", 1.0, 3.0), ("comm", 4.0, 0.5)]


def test_collectives_match_by_group_and_order_not_by_time() -> None:
    # Two subgroups' all-reduces interleave; agent 2 is in the other group only.
    spans = {
        0: [_ar(0.0, 1.0, group=(0, 1)), _ar(2.0, 1.0, group=(0, 1))],
        1: [_ar(0.5, 0.5, group=(0, 1)), _ar(2.5, 0.5, group=(0, 1))],
        2: [_ar(0.0, 2.0, group=(2, 3))],  # agent 3 not profiled: no figure for this call
    }
    waits = straggler_waits(spans)
    assert waits == {(0, 0): 0.5, (1, 0): 0.0, (0, 1): 0.5, (1, 1): 0.0}


def test_comm_inside_compute_is_not_compute() -> None:
    # A DDP bucket all-reduce overlapping backward counts as communication where it runs.
    spans = {0: [_span("ddla.compute", 0.0, 2.0), _ar(0.5, 1.0, group=(0,)),
                 _span("ddla.wait", 1.8, 0.1, reason="server")]}  # fmt: skip
    t = totals(spans)[0]
    assert t["compute_s"] == pytest.approx(0.9)
    assert t["comm_s"] == pytest.approx(1.0) and t["wait_s"] == pytest.approx(0.1)


def _trace(host: str, base_ns: int, align_ts: float) -> dict:
    return {
        "host_name": host,
        "baseTimeNanoseconds": base_ns,
        "traceEvents": [
            {
                "ph": "X",
                "name": "ddla.align",
                "ts": align_ts,
                "dur": 10.0,
                "pid": 1,
                "tid": 1,
                "args": {},
            }
        ],
    }


def test_one_host_keeps_its_clock_several_hosts_align_on_the_barrier() -> None:
    same = [_trace("a", 1_000_000, 100.0), _trace("a", 2_000_000, 0.0)]
    how = alignment(same)
    assert how["shift_us"] == [0.0, 0.0] and how["align_skew_us"] == pytest.approx(900.0)
    apart = [_trace("a", 1_000_000, 100.0), _trace("b", 5_000_000, 0.0)]
    how = alignment(apart)
    assert how["shift_us"] == [0.0, pytest.approx(-3900.0)] and how["align_skew_us"] == 0.0
    merged = merge(apart)
    aligned = [e for e in merged["traceEvents"] if e.get("name") == "ddla.align"]
    assert [e["pid"] for e in aligned] == [0, 1]
    assert aligned[0]["ts"] == pytest.approx(aligned[1]["ts"])
    names = [e["args"]["name"] for e in merged["traceEvents"] if e.get("name") == "process_name"]
    assert names == ["agent 0", "agent 1"]
