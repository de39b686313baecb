"""ddla bench: rows from run directories, speed-ups, records; bad entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddla.bench import add_speedups, parse_entry, run_bench, summarize, to_target
from ddla.errors import ConfigError
from tests.rundir_factory import write_run_dir


def test_parse_entry() -> None:
    e = parse_entry(" diloco, sync.every=250 ,sync.compress=int8")
    assert e.overrides == ("sync.strategy=diloco", "sync.every=250", "sync.compress=int8")
    assert e.slug == "diloco_sync.every_250_sync.compress_int8"
    for bad in ("", "sync.every=3", "diloco,every"):
        with pytest.raises(ConfigError) as info:
            parse_entry(bad)
        assert info.value.help


def test_summarize_finds_the_first_evaluation_at_target(tmp_path: Path) -> None:
    run = write_run_dir(tmp_path / "r", agents=3, evals=6)
    # Global accuracy is 0.52 + 0.06 i: 0.76 first reached at i = 4 (step 200).
    row = summarize("x", run, 0.76)
    assert row["reached"] and row["step_to_target"] == 200
    assert row["wall_to_target_s"] == pytest.approx(6.0)
    assert row["time_to_target_s"] == pytest.approx(6.0)  # no train_s lines: wall time
    assert row["bytes_to_target"] == 120_000 * 4 * (1 + 2 + 3)
    assert row["utilization"] == pytest.approx(6.0 / 9.0)  # mean compute 6 s / 9 s
    assert row["final_accuracy"] == 0.8734 and row["clock"] == "virtual"
    missed = summarize("y", run, 0.99)
    assert not missed["reached"] and missed["time_to_target_s"] is None
    assert to_target([], 0.5) is None


def test_speedups_against_the_first_entry() -> None:
    rows = [{"time_to_target_s": 100.0}, {"time_to_target_s": 4.0}, {"time_to_target_s": None}]
    add_speedups(rows)
    assert [r["speedup"] for r in rows] == [1.0, 25.0, None]


def test_run_bench_writes_record_table_and_plot(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def fake_launch(*, config_file, overrides, progress, force):  # writes what a run would
        calls.append(list(overrides))
        out = Path(next(o for o in overrides if o.startswith("out="))[4:])
        write_run_dir(out, agents=2, evals=5)
        return {}

    record = run_bench(
        [parse_entry("allreduce"), parse_entry("allreduce,optim.lr=0.1")],
        out=tmp_path / "bench",
        target=0.7,
        overrides=["agents=2", "comm.link=wan-100", "comm.clock=virtual"],
        launch=fake_launch,
        command="ddla bench --test",
    )
    assert calls[1][-2:] == [
        "optim.lr=0.1",
        f"out={tmp_path / 'bench' / '1-allreduce_optim.lr_0.1'}",
    ]
    saved = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert saved["command"] == "ddla bench --test" and saved["target"] == 0.7
    assert len(saved["git_sha"]) >= 7 and saved["machine"]["cpus"]
    assert [r["speedup"] for r in saved["results"]] == [1.0, 1.0]
    table = (tmp_path / "bench" / "bench.md").read_text()
    assert "| allreduce,optim.lr=0.1 |" in table and "virtual clock" in table
    assert (tmp_path / "bench" / "bench.png").read_bytes().startswith(b"\x89PNG")
    assert record["results"][0]["step_to_target"] == 150


def test_bad_bench_settings_fail_before_any_run(tmp_path: Path) -> None:
    def never(**kwargs):
        raise AssertionError("must not run")

    with pytest.raises(ConfigError, match="unknown strategy 'telepathy'"):
        run_bench(
            [parse_entry("allreduce"), parse_entry("telepathy")],
            out=tmp_path,
            target=0.5,
            launch=never,
        )
    with pytest.raises(ConfigError, match="target accuracy"):
        run_bench([parse_entry("allreduce")], out=tmp_path, target=1.5, launch=never)
    with pytest.raises(ConfigError, match="at least one strategy"):
        run_bench([], out=tmp_path, target=0.5, launch=never)
