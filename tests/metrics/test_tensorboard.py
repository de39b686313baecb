"""TensorBoard event files: written per agent, read back with TensorBoard's own reader."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ddla.metrics.tensorboard import TeeSink, TensorBoardSink, export_run
from tests.rundir_factory import write_run_dir


def _scalars(path: Path, tag: str) -> list[tuple[int, float, float]]:
    acc = EventAccumulator(str(path))
    acc.Reload()
    return [(e.step, e.value, e.wall_time) for e in acc.Scalars(tag)]


def test_sink_writes_one_run_per_agent(tmp_path: Path) -> None:
    with TensorBoardSink(tmp_path) as sink:
        for step in (10, 20):
            sink.write({"step": step, "agent": 0, "loss": 1.0 / step, "wall_s": step / 10})
            sink.write({"step": step, "agent": "global", "accuracy": step / 100, "wall_s": 2.0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent0", "global"]
    loss = _scalars(tmp_path / "agent0", "loss")
    assert [(s, round(v, 6)) for s, v, _ in loss] == [(10, 0.1), (20, 0.05)]
    # Event wall times follow the run's wall_s (1 s then 2 s after start).
    assert loss[1][2] - loss[0][2] == pytest.approx(1.0, abs=1e-3)
    acc = _scalars(tmp_path / "global", "accuracy")
    assert [s for s, _, _ in acc] == [10, 20]


def test_export_run_matches_metrics_jsonl(tmp_path: Path) -> None:
    run = write_run_dir(tmp_path / "run", agents=2, evals=4)
    tb = export_run(run)
    assert sorted(p.name for p in tb.iterdir()) == ["agent0", "agent1", "global"]
    acc = _scalars(tb / "global", "accuracy")
    assert [s for s, _, _ in acc] == [50, 100, 150, 200]
    assert acc[-1][1] == pytest.approx(0.52 + 0.24)
    sent = _scalars(tb / "agent1", "bytes_sent")
    assert sent[-1][1] == 120_000 * 4 * 2


def test_tee_sends_to_every_sink(tmp_path: Path) -> None:
    seen: list[dict] = []

    class Recorder:
        def write(self, record: dict) -> None:
            seen.append(record)

        def close(self) -> None:
            seen.append({"closed": True})

    tee = TeeSink(Recorder(), None, TensorBoardSink(tmp_path))
    tee.write({"step": 1, "agent": "global", "loss": 0.5})
    tee.close()
    assert seen == [{"step": 1, "agent": "global", "loss": 0.5}, {"closed": True}]
    assert _scalars(tmp_path / "global", "loss")[0][:2] == (1, 0.5)
