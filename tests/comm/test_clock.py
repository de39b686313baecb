"""Real and virtual clocks, and the emulator that charges link time on them."""

from __future__ import annotations

import time

import pytest
import torch

from ddla.comm.clock import CLOCKS, CpuClock, RealClock, VirtualClock, make_clock
from ddla.comm.emulation import LinkEmulator
from ddla.comm.links import LinkTable


def test_virtual_clock_advances_without_sleeping() -> None:
    clock = VirtualClock()
    t0, w0 = clock.now(), time.monotonic()
    clock.advance(1000.0)
    clock.advance(0.5)
    assert time.monotonic() - w0 < 0.5
    assert clock.now() - t0 >= 1000.5
    assert clock.modelled_s == 1000.5 and clock.label == "virtual"


def test_real_clock_sleeps_the_modelled_time() -> None:
    clock = RealClock()
    t0 = time.monotonic()
    clock.advance(0.05)
    elapsed = time.monotonic() - t0
    assert 0.05 <= elapsed < 1.0  # upper bound: scheduling delay on a loaded machine
    assert clock.modelled_s == 0.05 and clock.label == "real"


def test_cpu_clock_counts_cpu_time_not_waiting() -> None:
    clock = CpuClock()
    t0 = clock.now()
    time.sleep(0.2)  # descheduled: a dedicated core would not have spent this
    slept = clock.now() - t0
    # Spin for 50 ms of CPU (not wall) time, so a loaded machine cannot starve the loop.
    busy_until = time.process_time() + 0.05
    while time.process_time() < busy_until:
        pass
    busy = clock.now() - t0 - slept
    clock.advance(10.0)
    assert slept < 0.05 and busy >= 0.049
    assert clock.now() - t0 >= 10.0 and clock.label == "virtual-cpu"


def test_registry() -> None:
    assert set(CLOCKS) == {"real", "virtual", "virtual-cpu"}
    assert isinstance(make_clock("virtual"), VirtualClock)


def test_emulator_charges_exactly_in_virtual_mode() -> None:
    table = LinkTable.build("wan-100", None, world_size=4)
    emu = LinkEmulator(table, VirtualClock(), rank=1)
    assert emu.active
    want = 6 * (0.025 + 1e6 * 8 / 100e6)
    assert emu.charge("all_reduce", 4e6) == pytest.approx(want, rel=1e-12)
    assert emu.clock.modelled_s == pytest.approx(want, rel=1e-12)
    assert not LinkEmulator(
        LinkTable.build("lan", None, world_size=4), VirtualClock(), rank=0
    ).active


def test_async_future_completes_after_the_modelled_time_on_the_real_clock() -> None:
    table = LinkTable.build("1gbit:20ms", None, world_size=2)
    emu = LinkEmulator(table, RealClock(), rank=0)
    real: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    wrapped = emu.wrap_future(real, "all_reduce", 1000)
    t0 = time.monotonic()
    real.set_result(torch.ones(2))
    assert not wrapped.done()  # the caller can compute while the link is busy
    value = wrapped.wait()
    assert 0.04 <= time.monotonic() - t0 < 1.0  # 2 ring steps of ~20 ms (+ load)
    assert value.tolist() == [1.0, 1.0]


def test_async_future_virtual_and_failure() -> None:
    table = LinkTable.build("1gbit:20ms", None, world_size=2)
    emu = LinkEmulator(table, VirtualClock(), rank=0)
    real: torch.futures.Future[int] = torch.futures.Future()
    wrapped = emu.wrap_future(real, "barrier", 0)
    real.set_result(7)
    assert wrapped.wait() == 7 and emu.clock.modelled_s == pytest.approx(0.04)
    broken: torch.futures.Future[int] = torch.futures.Future()
    failed = emu.wrap_future(broken, "barrier", 0)
    broken.set_exception(RuntimeError("peer died"))
    with pytest.raises(RuntimeError, match="peer died"):
        failed.wait()


def test_transfers_queue_on_the_link() -> None:
    table = LinkTable.build("1gbit:50ms", None, world_size=2)
    emu = LinkEmulator(table, RealClock(), rank=0)
    futures = []
    # The link time runs from when each transfer is wrapped: the clock starts before that
    # (started after, a loaded machine's delay between the two was subtracted from both).
    t0 = time.monotonic()
    for _ in range(2):
        real: torch.futures.Future[int] = torch.futures.Future()
        futures.append(emu.wrap_future(real, "send", 0, dst=1))
        real.set_result(1)
    futures[0].wait()
    first = time.monotonic() - t0
    futures[1].wait()
    both = time.monotonic() - t0
    # the second waits for the first: both take two link times, not one
    assert first >= 0.04 and both >= 0.09
