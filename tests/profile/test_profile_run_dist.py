"""A real profiled run: 2 gloo agents, DiLoCo, every step in the window (tests/profile_run.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from ddla.comm import Transport
from ddla.profile.export import ddla_events, enrich
from ddla.profile.spans import Spans

pytestmark = pytest.mark.dist


def _comm(events: list[dict], tag: str = "train") -> list[dict]:
    return [e for e in events if e["name"].startswith("ddla.comm.") and e["args"]["tag"] == tag]


def test_every_agent_has_compute_and_comm_spans_with_summary_bytes(profiled_run_dir: Path) -> None:
    summary = json.loads((profiled_run_dir / "summary.json").read_text())
    per_agent = {a["rank"]: a for a in summary["comm"]["per_agent"]}
    assert sorted(per_agent) == [0, 1]
    for rank in (0, 1):
        trace = json.loads((profiled_run_dir / "profile" / f"agent{rank}.json").read_text())
        assert trace["ddla"]["rank"] == rank and trace["ddla"]["unmatched_spans"] == 0
        events = ddla_events(trace)
        names = Counter(e["name"] for e in events)
        assert names["ddla.compute"] == 20 and names["ddla.sync.diloco"] == 20
        assert names["ddla.align"] == 1 and names["ddla.eval"] == 1  # the step-10 evaluation
        train = _comm(events)
        # DiLoCo every 5 steps, 20 steps: 4 pseudo-gradient all-reduces, all in the window, and
        # nothing else trains (the initial broadcast is 'control', finish() has nothing left).
        assert [e["name"] for e in train] == ["ddla.comm.all_reduce"] * 4
        assert sum(e["args"]["bytes_sent"] for e in train) == per_agent[rank]["bytes_sent"]
        assert sum(e["args"]["bytes_received"] for e in train) == per_agent[rank]["bytes_received"]
        assert all(e["args"]["group"] == [0, 1] and e["args"]["link_modelled_s"] > 0 for e in train)
        # Chrome trace shape that Perfetto / chrome://tracing load: complete events with times.
        assert all(isinstance(e["ts"], (int, float)) and e["dur"] >= 0 for e in events)
        # Spans nest: every sync span lies inside one compute span of the same thread.
        computes = [e for e in events if e["name"] == "ddla.compute"]
        for sync in (e for e in events if e["name"] == "ddla.sync.diloco"):
            assert any(c["ts"] <= sync["ts"] and sync["ts"] + sync["dur"] <= c["ts"] + c["dur"]
                       for c in computes)  # fmt: skip


def test_merged_trace_and_timeline_hold_both_agents(profiled_run_dir: Path) -> None:
    summary = json.loads((profiled_run_dir / "summary.json").read_text())
    merged = json.loads((profiled_run_dir / "profile" / "merged.json").read_text())
    events = ddla_events(merged)
    assert {e["pid"] for e in events} == {0, 1}
    assert merged["ddla"]["alignment"]["rule"].startswith("one host")
    timeline = json.loads((profiled_run_dir / "profile" / "timeline.json").read_text())
    assert timeline["window"] == [0, 20] and timeline["strategy"] == "diloco"
    for agent in timeline["agents"]:
        totals = agent["totals"]
        expected = summary["comm"]["per_agent"][agent["rank"]]
        assert totals["bytes_sent"] == expected["bytes_sent"]
        assert totals["compute_s"] > 0 and totals["comm_s"] > 0
        # Real clock on wan-100: the modelled link time is slept inside the transfers.
        assert totals["link_measured_s"] >= totals["link_modelled_s"] > 0
    # Rank 0's modelled link seconds are its clock's (every train op is in the window).
    rank0 = timeline["agents"][0]["totals"]["link_modelled_s"]
    assert rank0 == pytest.approx(summary["link"]["modelled_s"], rel=1e-6)


def test_spans_under_a_real_profiler_carry_the_seams_facts(tmp_path: Path) -> None:
    transport = Transport.single()
    transport.spans = spans = Spans()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        spans.active = True
        with spans.span("ddla.compute", step=0):
            transport.all_reduce(torch.ones(4), op="avg")
            transport.barrier()
        spans.active = False
        transport.all_reduce(torch.ones(4))  # outside the window: no span
    prof.export_chrome_trace(str(tmp_path / "t.json"))
    trace = json.loads((tmp_path / "t.json").read_text())
    assert enrich(trace, spans.take()) == 0
    got = [
        (e["name"], e["args"].get("tag"), e["args"].get("bytes_sent")) for e in ddla_events(trace)
    ]
    assert got == [("ddla.compute", None, None), ("ddla.comm.all_reduce", "train", 0),
                   ("ddla.comm.barrier", "control", 0)]  # fmt: skip


def test_without_profiling_the_transport_has_no_spans() -> None:
    transport = Transport.single()
    assert transport.spans is None
    transport.all_reduce(torch.ones(2))
    assert transport.stats.totals()["calls"] == 1
