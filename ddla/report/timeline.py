"""The report's per-agent timeline of a profiled run (``OUT/profile/timeline.json``).

One lane per agent over the profiled window, on the merged trace's time axis: compute
(green), evaluation (orange), communication (blue) and waiting (grey: collectives waiting for
the last member, and ``ddla.wait`` spans); blank is time in no ddla span (the loop's own
bookkeeping, checkpoints), drawn as :mod:`ddla.profile.timeline` splits them; beside it, each
agent's totals and its link time modelled vs measured.

Example:
    >>> data = load_timeline("runs/latest")  # doctest: +SKIP
    >>> timeline_figure(data)  # doctest: +SKIP
    <Figure ...>
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ddla.errors import DataError
from ddla.profile.timeline import segments

TIMELINE = Path("profile") / "timeline.json"
COLORS = {"compute": "#2b8a3e", "eval": "#f59f00", "comm": "#1c7ed6", "wait": "#adb5bd"}
LABELS = {"compute": "compute", "eval": "evaluation", "comm": "communication", "wait": "waiting"}
KEYS = {"compute": "compute_s", "eval": "eval_s", "comm": "comm_s", "wait": "wait_s"}


def load_timeline(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's profile timeline, or None when the run did not profile.

    Raises:
        DataError: the file is there but unreadable.
    """
    path = Path(run_dir) / TIMELINE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable profile timeline ({exc})",
                        help="run the profile again (ddla run --profile)") from None  # fmt: skip


def timeline_figure(data: dict[str, Any]) -> Figure:
    """Lanes of compute / communication / waiting per agent, totals beside them."""
    agents = data["agents"]
    spans = {a["rank"]: a["spans"] for a in agents}
    pieces = segments(spans)
    fig = Figure(figsize=(11, 1.2 + 0.55 * len(agents) * 2), layout="constrained")
    lanes, bars = fig.subplots(1, 2, width_ratios=(3, 1), sharey=True)
    for y, a in enumerate(agents):
        for kind in COLORS:  # comm and wait over compute and evaluation
            xs = [(p["start_s"], p["dur_s"]) for p in pieces[a["rank"]] if p["kind"] == kind]
            if xs:
                lanes.broken_barh(xs, (y - 0.35, 0.7), color=COLORS[kind])
        t = a["totals"]
        left = 0.0
        for kind, key in KEYS.items():
            bars.barh(y, t.get(key, 0.0), left=left, color=COLORS[kind])
            left += t.get(key, 0.0)
        bars.annotate(
            f"link {t['link_modelled_s']:.3f} s modelled / {t['link_measured_s']:.3f} s measured",
            (0, y + 0.42), fontsize=7, va="top",
        )  # fmt: skip
    names = [f"agent {a['rank']}" for a in agents]
    lanes.set_yticks(range(len(agents)), names)
    lanes.invert_yaxis()
    lanes.set_xlabel("seconds since the window opened (real time, one axis for all agents)")
    a, b = data["window"]
    lanes.set_title(f"{data.get('strategy', '')}: steps {a} to {b - 1}", fontsize=10)
    fig.legend(
        handles=[Patch(color=COLORS[k], label=LABELS[k]) for k in COLORS],
        loc="outside lower center", fontsize=8, ncols=4,
    )  # fmt: skip
    lanes.grid(axis="x", alpha=0.3)
    bars.set_xlabel("seconds in the window")
    bars.set_title("totals", fontsize=10)
    return fig


def timeline_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per agent: the window's compute, comm, wait, link modelled/measured seconds, bytes."""
    return [{"rank": a["rank"], **a["totals"]} for a in data["agents"]]
