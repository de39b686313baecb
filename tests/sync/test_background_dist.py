"""Background synchronization (sync.background) over real gloo agents: the same parameters,
bit for bit, as the blocking path; DiLoCo's delayed update against the independent replay;
exact bytes; a peer lost while a transfer is in flight; exact modelled time with overlap."""

from __future__ import annotations

import os

import pytest
import torch

from ddla.comm.clock import VirtualClock
from ddla.comm.linkmodel import op_seconds
from ddla.comm.links import LinkTable
from ddla.errors import CommTimeoutError, PeerFailedError
from ddla.sync import SyncConfig, build_strategy
from ddla.testing import run_agents
from tests.sync.diloco_replay import CASES, assert_same_run, replay_case, run_library

pytestmark = pytest.mark.dist

#: Blocking vs background: tau = 0 (sent and awaited at once), tau >= 1 whole model and
#: fragments, with a compressor whose codes go through reduce-scatter + all-gather.
EQUAL_CASES = {
    "diloco_tau0": {"strategy": "diloco", "every": 3},
    "diloco_tau2_int8": {"strategy": "diloco", "every": 4, "overlap": 2, "compress": "int8"},
    "streaming_p3_tau2": {
        "strategy": "streaming_diloco",
        "every": 6,
        "fragments": 3,
        "overlap": 2,
    },
}


def _both_ways(transport) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, kwargs in EQUAL_CASES.items():
        for mode in ("never", "always"):
            before = transport.stats.totals("train")
            run = run_library(transport, SyncConfig(**kwargs, background=mode), 11)
            after = transport.stats.totals("train")
            run["bytes"] = (
                after["bytes_sent"] - before["bytes_sent"],
                after["bytes_received"] - before["bytes_received"],
            )
            out[f"{name}|{mode}"] = run
    out["replay"] = run_library(transport, SyncConfig(**CASES["diloco_tau1"][0]), 10)
    return out


def test_background_equals_blocking_bitwise_and_the_delayed_update_replays():
    results = run_agents(_both_ways, 3, timeout_s=240)
    for rank, got in enumerate(results):
        for name in EQUAL_CASES:
            off, on = got[f"{name}|never"], got[f"{name}|always"]
            assert on["bytes"] == off["bytes"] and on["bytes"][0] > 0, name
            for step, (a, b) in enumerate(zip(off["history"], on["history"], strict=True)):
                for x, y in zip(a, b, strict=True):
                    assert torch.equal(x, y), f"{name} rank {rank} step {step + 1}"
            for x, y in zip(off["final"], on["final"], strict=True):
                assert torch.equal(x, y), f"{name} rank {rank} final"
        # every agent ends on the same global model
        for x, y in zip(got["replay"]["final"], results[0]["replay"]["final"], strict=True):
            assert torch.equal(x, y)
    want = replay_case("diloco_tau1", world=3)
    for rank, got in enumerate(results):
        assert_same_run(got["replay"], want[rank], f"diloco_tau1 rank {rank}")


def _peer_dies_in_flight(transport) -> str:
    model = torch.nn.Linear(8, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sync = SyncConfig(strategy="diloco", every=3, overlap=2)
    strategy = build_strategy(sync, transport=transport, model=model, optimizer=opt)
    assert strategy.channel is not None
    for step in range(1, 10):
        if transport.rank == 1 and step == 3:
            os._exit(43)  # before its step-3 sync: agent 0's background transfer waits for it
        model(torch.randn(4, 8)).sum().backward()
        try:
            opt.step()  # step 3 sends in the background, step 5 needs the result
        except (PeerFailedError, CommTimeoutError) as exc:
            return f"{type(exc).__name__} at step {step}: {exc}"
    return "no error"


def test_a_peer_lost_during_a_background_transfer_is_a_clear_error():
    got = run_agents(_peer_dies_in_flight, 2, timeout_s=120, allow_exit=[1])[0]
    assert got.startswith(("PeerFailedError at step 5", "CommTimeoutError at step 5")), got
    assert "background transfer of fragment 0" in got and "closed the connection" in got, got


#: A known compute time per step and link (wan-100: 25 ms, 100 Mbit/s), H = 5, 20 steps.
COMPUTE_S, H, STEPS = 0.02, 5, 20


def _timed(transport, overlap: int, background: str) -> tuple[float, float]:
    local = [0.0]  # simulated compute time: exactly COMPUTE_S per step
    transport.emulate_links("wan-100", clock=VirtualClock(local=lambda: local[0]))
    model = torch.nn.Linear(64, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sync = SyncConfig(strategy="diloco", every=H, overlap=overlap, background=background)
    strategy = build_strategy(sync, transport=transport, model=model, optimizer=opt)
    t0, c0 = transport.clock.now(), transport.stats.totals("train")["seconds"]
    for _ in range(STEPS):
        model(torch.randn(2, 64)).sum().backward()
        local[0] += COMPUTE_S
        opt.step()
        opt.zero_grad()
    strategy.finish()
    strategy.close()
    return transport.clock.now() - t0, transport.stats.totals("train")["seconds"] - c0


def _clock_cases(transport) -> dict[str, tuple[float, float]]:
    return {
        f"{tau}|{mode}": _timed(transport, tau, mode)
        for tau, mode in ((0, "never"), (1, "never"), (0, "always"), (1, "always"), (3, "always"))
    }


def test_overlap_clock_charges_only_what_compute_did_not_cover():
    transfer = op_seconds(
        "all_reduce", (64 * 64 + 64) * 4, table=LinkTable.build("wan-100", "", world_size=2),
        rank=0,
    )  # fmt: skip
    assert transfer > COMPUTE_S  # one step of compute covers part of it, three steps all
    syncs, compute = STEPS // H, STEPS * COMPUTE_S
    blocking = compute + syncs * transfer
    # the last sync (step 20) is still in flight at finish, which waits for all of it
    tau1 = compute + (syncs - 1) * (transfer - COMPUTE_S) + transfer
    tau3 = compute + transfer
    for got in run_agents(_clock_cases, 2, timeout_s=180):
        want = {"0|never": blocking, "1|never": blocking, "0|always": blocking,
                "1|always": tau1, "3|always": tau3}  # fmt: skip
        for key, expected in want.items():
            step_time, comm = got[key]
            assert step_time == pytest.approx(expected, rel=1e-9, abs=1e-9), key
            # comm_s is the time the agent was blocked: the step time minus compute
            assert comm == pytest.approx(expected - compute, rel=1e-9, abs=1e-9), key
