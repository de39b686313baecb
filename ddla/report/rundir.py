"""Read a run directory (what every ``ddla run`` writes) for reports and benchmarks.

A run directory holds ``summary.json`` (final numbers), ``metrics.jsonl`` (one line per
evaluation and agent, ``"agent"`` is a rank or ``"global"``) and ``config.yaml``.

Example:
    >>> run = load_run("runs/latest")  # doctest: +SKIP
    >>> run.summary["final"]["accuracy"], len(run.series("global"))  # doctest: +SKIP
    (0.87, 20)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddla.errors import DataError

_NOT_A_RUN_HELP = "point at a directory written by `ddla run --out DIR` (it holds summary.json)"


@dataclass(frozen=True, slots=True)
class RunData:
    """One run directory, parsed."""

    path: Path
    summary: dict[str, Any]
    """summary.json as written by the run."""
    records: list[dict[str, Any]]
    """metrics.jsonl lines, in file order."""
    config_text: str
    """config.yaml verbatim ("" when absent)."""

    def agents(self) -> list[int]:
        """Ranks that logged metrics, sorted."""
        return sorted({r["agent"] for r in self.records if isinstance(r.get("agent"), int)})

    def series(self, agent: int | str) -> list[dict[str, Any]]:
        """The records of one agent (a rank or ``"global"``), ordered by step."""
        rows = [r for r in self.records if r.get("agent") == agent]
        return sorted(rows, key=lambda r: r.get("step", 0))

    @property
    def clock(self) -> str:
        """Which clock the run's times are on (``real`` unless the run says otherwise)."""
        link = self.summary.get("link") or {}
        return str(link.get("clock", "real"))

    @property
    def link(self) -> str:
        """The emulated link, e.g. ``wan-100 (agent 3: edge)``; ``lan`` when none."""
        link = self.summary.get("link") or {}
        return str(link.get("profile", "lan"))


def load_run(run_dir: str | Path) -> RunData:
    """Parse ``run_dir``.

    Raises:
        DataError: the directory does not exist, is not a run, or its files are malformed.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise DataError(f"run directory {str(path)!r} does not exist", help=_NOT_A_RUN_HELP)
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        raise DataError(
            f"{str(path)!r} is not a ddla run directory (no summary.json)", help=_NOT_A_RUN_HELP
        )
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{summary_path}: unreadable summary ({exc})",
            help="the run may have been interrupted; run it again",
        ) from None
    if not isinstance(summary, dict) or not isinstance(summary.get("final"), dict):
        raise DataError(
            f"{summary_path}: not a ddla summary (no 'final' metrics)", help=_NOT_A_RUN_HELP
        )
    records: list[dict[str, Any]] = []
    metrics_path = path / "metrics.jsonl"
    if metrics_path.is_file():
        for lineno, line in enumerate(metrics_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(
                    f"{metrics_path}:{lineno}: not a JSON line",
                    help="the run may have been interrupted while writing; run it again",
                ) from None
            if isinstance(record, dict) and "agent" in record and "step" in record:
                records.append(record)
    config_path = path / "config.yaml"
    config_text = config_path.read_text() if config_path.is_file() else ""
    return RunData(path=path, summary=summary, records=records, config_text=config_text)
