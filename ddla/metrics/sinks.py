"""Where metrics go: a JSONL file (one line per evaluation) and the console.

Example:
    >>> import tempfile, pathlib, json
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> with JsonlSink(path) as sink:
    ...     sink.write({"step": 1, "agent": "global", "accuracy": 0.5})
    >>> json.loads(path.read_text())["accuracy"]
    0.5
"""

from __future__ import annotations

import json
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class JsonlSink:
    """Append one JSON object per line, flushed so a crash loses at most the line in flight."""

    def __init__(self, path: Path, *, append: bool = False) -> None:
        self.path = Path(path)
        self._f = open(self.path, "a" if append else "w")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ConsoleProgress:
    """One rich progress bar for the run with live loss, accuracy and bytes."""

    def __init__(self, *, total: int, description: str, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=False)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("acc {task.fields[acc]}"),
            TextColumn("sent {task.fields[sent]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task(
            description, total=total, loss="-", acc="-", sent="0 B"
        )

    def __enter__(self) -> ConsoleProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(
        self,
        step: int,
        *,
        loss: float | None = None,
        accuracy: float | None = None,
        bytes_sent: int | None = None,
    ) -> None:
        fields: dict[str, str] = {}
        if loss is not None:
            fields["loss"] = f"{loss:.3f}"
        if accuracy is not None:
            fields["acc"] = f"{accuracy:.1%}"
        if bytes_sent is not None:
            fields["sent"] = human_bytes(bytes_sent)
        self._progress.update(self._task, completed=step, **fields)
