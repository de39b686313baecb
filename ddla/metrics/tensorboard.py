"""TensorBoard sink: the metrics lines of a run as TensorBoard scalars, one run per agent.

Each agent (and the merged ``global`` model) gets its own event directory under ``RUN_DIR/tb``
(``tb/global``, ``tb/agent0``, ...), so TensorBoard overlays them on the same charts with the
same tags. Event wall times are the run's own ``wall_s`` (on its clock, real or virtual), so
TensorBoard's "relative" axis shows emulated time.

Example:
    >>> import tempfile
    >>> with TensorBoardSink(tempfile.mkdtemp()) as tb:
    ...     tb.write({"step": 10, "agent": "global", "loss": 0.7, "accuracy": 0.8, "wall_s": 1.5})

View with ``tensorboard --logdir RUN_DIR/tb``.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where a writer is made: it costs ~1 s, and most runs never write
    from torch.utils.tensorboard import SummaryWriter

#: metrics.jsonl keys written as scalars (the tag is the key).
SCALARS = (
    "loss",
    "accuracy",
    "perplexity",
    "precision",
    "recall",
    "f1",
    "bytes_sent",
    "bytes_received",
    "wall_s",
    "compute_s",
    "comm_s",
)


def _run_name(agent: Any) -> str:
    # "global", "site<r>" (the global model on site r's test data), or a rank.
    return agent if isinstance(agent, str) else f"agent{agent}"


class TensorBoardSink:
    """Write metrics records (the dicts written to metrics.jsonl) as TensorBoard scalars.

    ``purge_step``: when resuming, events at or after this step from the interrupted run are
    hidden, so curves do not double back.
    """

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.purge_step = purge_step
        self._writers: dict[str, SummaryWriter] = {}
        # Event wall times: the run's start plus its own wall_s (real or virtual clock).
        self._t0 = time.time()

    def _writer(self, agent: Any) -> SummaryWriter:
        name = _run_name(agent)
        if name not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            self._writers[name] = SummaryWriter(
                log_dir=str(self.log_dir / name), purge_step=self.purge_step
            )
        return self._writers[name]

    def write(self, record: dict[str, Any]) -> None:
        writer = self._writer(record.get("agent", "global"))
        step = int(record["step"])
        wall = record.get("wall_s")
        walltime = self._t0 + float(wall) if wall is not None else None
        for key in SCALARS:
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(key, float(value), global_step=step, walltime=walltime)
        writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def __enter__(self) -> TensorBoardSink:
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def export_run(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/tb`` from a finished run's ``metrics.jsonl``; return the tb directory.

    For runs made without ``--tensorboard``: the same event files the live sink would write.
    """
    from ddla.report.rundir import load_run

    run = load_run(run_dir)
    out = run.path / "tb"
    with TensorBoardSink(out) as sink:
        for record in run.records:
            sink.write(record)
    return out


class TeeSink:
    """Send every record to several sinks (e.g. JSONL and TensorBoard)."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def write(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
