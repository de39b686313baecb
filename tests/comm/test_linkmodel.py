"""The modelled time of each op follows its message pattern."""

from __future__ import annotations

import pytest

from ddla.comm.linkmodel import OPS, op_seconds
from ddla.comm.links import LinkTable

MB = 1_000_000


def test_all_reduce_pays_2n_minus_1_steps_of_b_over_n() -> None:
    for n in (2, 3, 4, 8):
        table = LinkTable.build("wan-100", None, world_size=n)
        step = 0.025 + (8 * MB / n) * 8 / 100e6
        assert op_seconds("all_reduce", 8 * MB, table=table, rank=0) == pytest.approx(
            2 * (n - 1) * step, rel=1e-12
        )


def test_latency_dominates_small_messages() -> None:
    table = LinkTable.build("wan-100", None, world_size=4)
    # 6 latency steps of 25 ms: small all-reduces cost 150 ms on wan-100 whatever their size.
    assert op_seconds("all_reduce", 4, table=table, rank=2) == pytest.approx(0.15, rel=1e-4)
    assert op_seconds("barrier", 0, table=table, rank=1) == pytest.approx(0.15)


def test_other_collectives() -> None:
    table = LinkTable.build("100mbit:10ms", None, world_size=4)
    assert op_seconds("all_gather", MB, table=table, rank=0) == pytest.approx(3 * (0.01 + 0.08))
    assert op_seconds("reduce_scatter", 4 * MB, table=table, rank=0) == pytest.approx(
        3 * (0.01 + 0.08)
    )
    # pairwise exchange: 3 rounds, each moving one 1 MB chunk (of 4 MB) over every edge
    assert op_seconds("all_to_all", 4 * MB, table=table, rank=0) == pytest.approx(3 * (0.01 + 0.08))
    assert op_seconds("broadcast", MB, table=table, rank=3, src=1) == pytest.approx(0.01 + 3 * 0.08)
    obj = op_seconds("all_gather_object", MB, table=table, rank=0)
    assert obj == pytest.approx(3 * (0.01 + 64 / 100e6) + 3 * (0.01 + 0.08))
    assert op_seconds("send", MB, table=table, rank=0, dst=1) == pytest.approx(0.09)
    assert op_seconds("recv", MB, table=table, rank=1, src=0) == pytest.approx(0.09)


def test_one_slow_agent_slows_every_ring_step() -> None:
    fast = LinkTable.build("wan", None, world_size=4)
    slow = LinkTable.build("wan", {2: "edge"}, world_size=4)
    step_edge = 0.080 + (MB / 4) * 8 / 20e6
    assert op_seconds("all_reduce", MB, table=slow, rank=0) == pytest.approx(6 * step_edge)
    assert op_seconds("all_reduce", MB, table=slow, rank=0) > 5 * op_seconds(
        "all_reduce", MB, table=fast, rank=0
    )
    # every all-to-all round crosses agent 2's slow link (someone sends to or from it)
    a2a_edge = 0.080 + (MB / 4) * 8 / 20e6
    assert op_seconds("all_to_all", MB, table=slow, rank=0) == pytest.approx(3 * a2a_edge)
    # Point to point only pays the far link when it is crossed.
    assert op_seconds("send", MB, table=slow, rank=0, dst=1) == pytest.approx(0.025 + 0.008)
    assert op_seconds("send", MB, table=slow, rank=0, dst=2) == pytest.approx(0.08 + 0.4)


def test_free_cases_and_bad_calls() -> None:
    lan = LinkTable.build("lan", None, world_size=4)
    solo = LinkTable.build("edge", None, world_size=1)
    for op in OPS:
        assert op_seconds(op, MB, table=lan, rank=0, src=1, dst=1) == 0.0
        assert op_seconds(op, MB, table=solo, rank=0, src=0, dst=0) == 0.0
    wan = LinkTable.build("wan", None, world_size=2)
    with pytest.raises(ValueError, match="unknown op"):
        op_seconds("scatter", MB, table=wan, rank=0)
    with pytest.raises(ValueError, match="needs a peer"):
        op_seconds("send", MB, table=wan, rank=0, dst=0)
    with pytest.raises(ValueError, match="needs a peer"):
        op_seconds("recv", MB, table=wan, rank=0)
