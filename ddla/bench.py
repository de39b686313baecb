"""``ddla bench``: several strategies on one workload, side by side, under one link profile.

Each entry is a strategy name plus its own overrides, e.g. ``"diloco,sync.every=250,
sync.compress=int8"``. Every entry runs to completion with the same base settings (dataset,
model, agents, link, clock) in ``OUT/<n>-<strategy>``; the bench then reads each run's
``metrics.jsonl`` and reports, per entry:

- **time to target**: seconds of training (inside training steps: forward, backward,
  synchronization, update; the evaluation harness excluded) until the merged global model
  first reaches the target accuracy at an evaluation — on the run's clock, real or virtual;
- **bytes to target**: bytes sent by all agents up to that evaluation;
- **compute utilization**: compute time / training time, and compute time / wall time;
- **final accuracy** of the merged model;
- the speed-up of each entry against the first one (the baseline).

Results are written as ``bench.json`` (the record: config, git SHA, machine, command), a
markdown table ``bench.md`` and ``bench.png`` (accuracy against time and bytes).

Example:
    >>> parse_entry("diloco,sync.every=250,sync.compress=int8").overrides
    ('sync.strategy=diloco', 'sync.every=250', 'sync.compress=int8')
"""

from __future__ import annotations

import io
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddla.errors import ConfigError
from ddla.report.rundir import load_run


@dataclass(frozen=True, slots=True)
class BenchEntry:
    """One strategy of the bench: a label and its overrides (its strategy first)."""

    label: str
    overrides: tuple[str, ...]

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.label)[:60]


def parse_entry(text: str) -> BenchEntry:
    """``"NAME[,a.b=c,...]"`` -> a :class:`BenchEntry` (the name becomes ``sync.strategy``)."""
    name, *rest = [part.strip() for part in text.split(",")]
    if not name or "=" in name:
        raise ConfigError(
            f"bench entry {text!r} does not start with a strategy name",
            help="write STRATEGY[,section.key=value,...], e.g. diloco,sync.every=250",
        )
    for item in rest:
        if "=" not in item:
            raise ConfigError(
                f"bench entry {text!r}: {item!r} is not section.key=value",
                help="write STRATEGY[,section.key=value,...], e.g. diloco,sync.every=250",
            )
    return BenchEntry(label=text.strip(), overrides=(f"sync.strategy={name}", *rest))


def to_target(records: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first global evaluation at or above ``target`` accuracy (None if never reached)."""
    for row in sorted(
        (r for r in records if r.get("agent") == "global"), key=lambda r: r.get("step", 0)
    ):
        if float(row.get("accuracy", 0.0)) >= target:
            return row
    return None


def train_seconds(records: list[dict[str, Any]], row: dict[str, Any]) -> float:
    """Training seconds at a global row: its ``train_s``, else the agents' at that step."""
    if row.get("train_s") is not None:
        return float(row["train_s"])
    same = [r.get("train_s") for r in records if r.get("step") == row.get("step")]
    return float(max((t for t in same if t is not None), default=row.get("wall_s", 0.0)))


def summarize(label: str, run_dir: Path, target: float) -> dict[str, Any]:
    """One bench row from a finished run directory."""
    run = load_run(run_dir)
    s, times = run.summary, run.summary.get("time", {})
    agents = s.get("comm", {}).get("per_agent", [])
    wall = float(times.get("wall_s") or 0.0)
    train = float(times.get("train_s") or wall)
    compute = sum(float(a.get("compute_s", 0.0)) for a in agents) / max(len(agents), 1)
    hit = to_target(run.records, target)
    return {
        "label": label,
        "run_dir": str(run_dir),
        "strategy": s.get("strategy"),
        "steps": s.get("steps"),
        "target": target,
        "reached": hit is not None,
        "step_to_target": hit["step"] if hit else None,
        "time_to_target_s": train_seconds(run.records, hit) if hit else None,
        "wall_to_target_s": float(hit["wall_s"]) if hit else None,
        "bytes_to_target": int(hit["bytes_sent"]) if hit else None,
        "final_accuracy": float(s["final"]["accuracy"]),
        "train_s": train,
        "wall_s": wall,
        "compute_s": compute,
        "utilization": compute / train if train else None,
        "utilization_wall": compute / wall if wall else None,
        "bytes_sent": int(s.get("comm", {}).get("bytes_sent", 0)),
        "link": run.link,
        "clock": run.clock,
    }


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """``speedup``: the baseline's (first row's) time to target / this row's."""
    base = rows[0]["time_to_target_s"] if rows else None
    for row in rows:
        t = row["time_to_target_s"]
        row["speedup"] = base / t if base and t else None


def git_sha(cwd: Path | None = None) -> str:
    """HEAD of the checkout ddla runs from, with ``-dirty`` when it has local changes."""
    where = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


Launch = Callable[..., dict[str, Any]]


def run_bench(
    entries: Sequence[BenchEntry],
    *,
    out: Path,
    target: float,
    overrides: Sequence[str] = (),
    config_file: Path | None = None,
    launch: Launch | None = None,
    progress: bool = False,
    command: str | None = None,
) -> dict[str, Any]:
    """Run every entry with the shared ``overrides`` and return (and write) the bench record."""
    if not entries:
        raise ConfigError("ddla bench needs at least one strategy", help="pass --strategy NAME")
    if not 0.0 < target <= 1.0:
        raise ConfigError(
            f"bench target accuracy must be in (0, 1], got {target}", help="e.g. --target 0.88"
        )
    from ddla.config import RunConfig

    for entry in entries:  # every entry's settings are valid before the first one runs
        RunConfig.load(config_file, [*overrides, *entry.overrides])
    if launch is None:
        from ddla.launch import launch as launch_fn

        launch = launch_fn
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, entry in enumerate(entries):
        run_dir = out / f"{i}-{entry.slug}"
        started = time.monotonic()
        launch(
            config_file=config_file,
            overrides=[*overrides, *entry.overrides, f"out={run_dir}"],
            progress=progress,
            force=True,  # a bench re-run replaces its own runs (the old ones are moved aside)
        )
        row = summarize(entry.label, run_dir, target)
        row["overrides"] = list(entry.overrides)
        row["real_seconds"] = time.monotonic() - started  # how long the run took to simulate
        rows.append(row)
    add_speedups(rows)
    record = {
        "command": command or " ".join(["ddla", *sys.argv[1:]]),
        "git_sha": git_sha(),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target": target,
        "overrides": list(overrides),
        "config_file": str(config_file) if config_file else None,
        "results": rows,
    }
    (out / "bench.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "bench.md").write_text(markdown_table(record) + "\n")
    (out / "bench.png").write_bytes(plot(record))
    return record


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "—"
    if kind == "s":
        return f"{value:,.1f} s"
    if kind == "pct":
        return f"{value:.1%}"
    if kind == "x":
        return f"{value:.1f}×"
    if kind == "mb":
        return f"{value / 1e6:,.1f} MB"
    return str(value)


COLUMNS = (
    ("strategy", "label", ""),
    ("time to target", "time_to_target_s", "s"),
    ("speed-up", "speedup", "x"),
    ("bytes to target", "bytes_to_target", "mb"),
    ("compute util.", "utilization", "pct"),
    ("util. (wall)", "utilization_wall", "pct"),
    ("final acc.", "final_accuracy", "pct"),
    ("steps", "steps", ""),
)


def markdown_table(record: dict[str, Any]) -> str:
    """The bench as a markdown table (for docs/benchmarks.md)."""
    rows = record["results"]
    clock = rows[0]["clock"] if rows else "?"
    link = rows[0]["link"] if rows else "?"
    head = [
        f"Target accuracy {record['target']:.0%}, link {link}, {clock} clock; "
        f"git {record['git_sha'][:12]}.",
        "",
        "| " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    body = ["| " + " | ".join(_fmt(r[key], kind) for _, key, kind in COLUMNS) + " |" for r in rows]
    return "\n".join(head + body)


def plot(record: dict[str, Any]) -> bytes:
    """Global accuracy against training time and against bytes, one line per entry (PNG)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    ax_t, ax_b = fig.subplots(1, 2)
    for row in record["results"]:
        run = load_run(row["run_dir"])
        series = run.series("global")
        accuracy = [r["accuracy"] for r in series]
        xs = [train_seconds(run.records, r) for r in series]
        ax_t.plot(xs, accuracy, marker="o", markersize=3, label=row["label"])
        ax_b.plot(
            [r["bytes_sent"] / 1e6 for r in series],
            [r["accuracy"] for r in series],
            marker="o",
            markersize=3,
            label=row["label"],
        )
    clock = record["results"][0]["clock"] if record["results"] else "?"
    for ax, label in ((ax_t, f"training time [s, {clock} clock]"), (ax_b, "bytes sent [MB]")):
        ax.axhline(record["target"], color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("global accuracy")
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()
