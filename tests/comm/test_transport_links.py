"""Link emulation in the Transport, with real gloo agents: modelled time within 10% (real
clock) and exactly (virtual clock).

One spawn of two agents runs every scenario (spawning costs seconds on a busy machine); the
tests below check its parts.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from ddla.comm import Transport, op_seconds
from ddla.comm.links import LinkTable
from ddla.errors import ConfigError
from ddla.testing import run_agents

pytestmark = pytest.mark.dist

MB = 1_000_000
VIRTUAL = ("100mbit:10ms", "1=20mbit:30ms")
REAL = "20mbit:20ms"
ASYNC = "1gbit:100ms"


def _virtual(transport: Transport) -> dict[str, Any]:
    transport.emulate_links(*VIRTUAL, clock="virtual")
    w0 = time.monotonic()
    out = transport.all_reduce(torch.ones(MB // 4))  # 1 MB of float32
    transport.broadcast(torch.ones(1000), src=0)
    transport.all_to_all(torch.ones(5000))  # two chunks of 10 kB: one crosses the link
    if transport.rank == 0:
        transport.send(torch.ones(2500), dst=1)
    else:
        transport.recv(torch.empty(2500), src=0)
    transport.all_reduce(torch.ones(MB // 4), tag="eval")  # the eval harness pays no link time
    return {
        "sum": out[0].item(),
        "modelled": transport.clock.modelled_s,
        "seconds": transport.stats.totals("train")["seconds"],
        "real": time.monotonic() - w0,
        "label": transport.clock.label,
    }


def _real(transport: Transport) -> float:
    transport.emulate_links(REAL, clock="real")
    t = torch.ones(MB // 4)
    transport.barrier()  # start together, so the timing is the op, not a straggler
    t0 = time.monotonic()
    transport.all_reduce(t)
    return time.monotonic() - t0


def _async(transport: Transport) -> dict[str, Any]:
    transport.emulate_links(ASYNC, clock="real")
    transport.barrier()
    before = transport.stats.totals("train")["seconds"]
    t0 = time.monotonic()
    fut = transport.all_reduce_async(torch.ones(10))
    issued = time.monotonic() - t0
    value = fut.wait()
    return {
        "issued": issued,
        "done": time.monotonic() - t0,
        "value": value.tolist(),
        "seconds": transport.stats.totals("train")["seconds"] - before,
    }


def _lan(transport: Transport) -> tuple[float, str]:
    transport.emulate_links("lan", clock="virtual")
    transport.all_reduce(torch.ones(1000))
    return transport.clock.modelled_s, transport.link_description


def _scenarios(transport: Transport) -> dict[str, Any]:
    return {
        "virtual": _virtual(transport),
        "real": _real(transport),
        "async": _async(transport),
        "lan": _lan(transport),
    }


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    return run_agents(_scenarios, 2, timeout_s=90)


def test_virtual_clock_charges_exactly_the_model(results: list[dict[str, Any]]) -> None:
    table = LinkTable.build(*VIRTUAL, world_size=2)
    want = (
        op_seconds("all_reduce", MB, table=table, rank=0)
        + op_seconds("broadcast", 4000, table=table, rank=0, src=0)
        + op_seconds("all_to_all", 20_000, table=table, rank=0)
        + op_seconds("send", 10_000, table=table, rank=0, dst=1)
    )
    assert want == pytest.approx(
        2 * (0.03 + 0.2) + (0.03 + 0.0016) + (0.03 + 0.004) + (0.03 + 0.004)
    )
    for r in results:
        v = r["virtual"]
        assert v["sum"] == 2.0 and v["label"] == "virtual"
        assert v["modelled"] == want  # exact: the same float arithmetic as the model
        # Recorded op seconds are on the virtual clock: real time + modelled time.
        assert want <= v["seconds"] <= want + v["real"] + 1e-6
        assert v["real"] < want  # nothing slept


def test_real_clock_never_beats_the_model(results: list[dict[str, Any]]) -> None:
    # Only the lower bound is a property: a loaded machine may take longer. How close the real
    # clock comes to the model is measured by benchmarks/link_validation.py.
    table = LinkTable.build(REAL, None, world_size=2)
    want = op_seconds("all_reduce", MB, table=table, rank=0)
    assert want == pytest.approx(0.44)  # 2 ring steps of 20 ms + 0.5 MB at 20 Mbit/s
    for r in results:
        assert r["real"] >= want, (r["real"], want)


def test_async_all_reduce_completes_after_the_modelled_time(
    results: list[dict[str, Any]],
) -> None:
    for r in results:
        a = r["async"]
        assert a["value"] == [2.0] * 10
        assert a["done"] >= 0.2  # 2 ring steps of 100 ms; never earlier (later under load)
        assert a["seconds"] >= 0.2  # the recorded op time includes the link


def test_lan_costs_nothing(results: list[dict[str, Any]]) -> None:
    assert [r["lan"] for r in results] == [(0.0, "lan")] * 2


def test_single_agent_and_bad_overrides() -> None:
    t = Transport.single().emulate_links("edge", clock="virtual")
    t.all_reduce(torch.ones(4))
    assert t.clock.modelled_s == 0.0 and t.link_description == "edge"
    with pytest.raises(ConfigError, match="agent 2 does not exist"):
        Transport.single().emulate_links("wan", "2=edge")
