"""Plots of one run: loss and accuracy against step, wall time and bytes; per-agent time split.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot state, no GUI
backend), so reports can be drawn from any process or thread.

Example:
    >>> from ddla.report.rundir import load_run
    >>> pngs = draw_all(load_run("runs/latest"))  # doctest: +SKIP
    >>> sorted(pngs)  # doctest: +SKIP
    ['by_bytes.png', 'by_step.png', 'by_wall.png', 'time_split.png']
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ddla.report.rundir import RunData
from ddla.report.timeline import load_timeline, timeline_figure

#: (file name, metrics.jsonl key on the x axis, axis label, scale applied to the values)
CURVES: tuple[tuple[str, str, str, float], ...] = (
    ("by_step.png", "step", "step", 1.0),
    ("by_wall.png", "wall_s", "wall time [s]", 1.0),
    ("by_bytes.png", "bytes_sent", "bytes sent [MB]", 1e-6),
)
METRICS = (("loss", "loss"), ("accuracy", "accuracy"))


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _xy(rows: list[dict[str, Any]], x_key: str, y_key: str, scale: float) -> tuple[list, list]:
    pts = [
        (r[x_key] * scale, r[y_key])
        for r in rows
        if r.get(x_key) is not None and r.get(y_key) is not None
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def curves(run: RunData, x_key: str, x_label: str, scale: float = 1.0) -> Figure:
    """Loss and accuracy against ``x_key``: the global model bold, each agent thin."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, len(METRICS))
    if x_key == "wall_s":
        x_label = f"{x_label}, {run.clock} clock"
    for ax, (key, label) in zip(axes, METRICS, strict=True):
        for rank in run.agents():
            xs, ys = _xy(run.series(rank), x_key, key, scale)
            if xs:
                ax.plot(xs, ys, linewidth=1, alpha=0.6, label=f"agent {rank}")
        xs, ys = _xy(run.series("global"), x_key, key, scale)
        if xs:
            ax.plot(xs, ys, color="black", linewidth=2.2, marker="o", markersize=3, label="global")
        ax.set_xlabel(x_label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{run.summary.get('strategy', '?')} — {label_of(run)}", fontsize=10)
    return fig


def time_split(run: RunData) -> Figure:
    """Per-agent wall time split into compute, communication and waiting (stacked bars)."""
    rows = time_rows(run)
    fig = Figure(figsize=(10, 0.5 + 0.45 * max(len(rows), 1) + 1.2), layout="constrained")
    ax = fig.subplots()
    names = [f"agent {r['rank']}" for r in rows]
    left = [0.0] * len(rows)
    for key, color in (("compute_s", "#2b8a3e"), ("comm_s", "#1c7ed6"), ("wait_s", "#adb5bd")):
        values = [r[key] for r in rows]
        ax.barh(
            names,
            values,
            left=left,
            color=color,
            label={"wait_s": "waiting"}.get(key, key.removesuffix("_s")),
        )
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_xlabel(f"seconds ({run.clock} clock)")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("where each agent's time went", fontsize=10)
    return fig


def time_rows(run: RunData) -> list[dict[str, float]]:
    """Per agent: wall, compute, comm and waiting seconds (waiting = wall − compute − comm,
    plus the time blocked inside communication beyond its link time, ``wait_s``)."""
    per_agent = (run.summary.get("comm") or {}).get("per_agent") or []
    run_wall = float((run.summary.get("time") or {}).get("wall_s") or 0.0)
    rows = []
    for entry in sorted(per_agent, key=lambda e: e.get("rank", 0)):
        rank = int(entry.get("rank", len(rows)))
        series = run.series(rank)
        wall = float(entry.get("wall_s") or (series[-1].get("wall_s") if series else 0) or run_wall)
        compute, comm = float(entry.get("compute_s") or 0.0), float(entry.get("comm_s") or 0.0)
        # Blocked inside communication beyond the link's time is waiting for a peer too.
        blocked = float(entry.get("wait_s") or 0.0) if "link_s" in entry else 0.0
        rows.append(
            {
                "rank": rank,
                "wall_s": wall,
                "compute_s": compute,
                "comm_s": comm - blocked,
                "wait_s": max(0.0, wall - compute - comm) + blocked,
            }
        )
    return rows


def label_of(run: RunData) -> str:
    """``4 agents, fashion-mnist, link wan-100 (virtual clock)``."""
    s = run.summary
    head = f"{s.get('agents', '?')} agents, {s.get('dataset', '?')}"
    return f"{head}, link {run.link} ({run.clock} clock)"


def membership(run: RunData) -> Figure | None:
    """Agents in the run against step, one mark per fault event (None without events)."""
    events = run.summary.get("faults") or []
    if not events:
        return None
    start = (run.summary.get("members") or {}).get("start") or []
    steps, counts = [0], [len(start) or len(events[0]["agents_after"])]
    for e in sorted(events, key=lambda e: e["step"]):
        steps.append(e["step"])
        counts.append(len(e["agents_after"]))
    steps.append(int(run.summary.get("steps") or steps[-1]))
    counts.append(counts[-1])
    fig = Figure(figsize=(10, 3), layout="constrained")
    ax = fig.subplots()
    ax.step(steps, counts, where="post", color="#1c7ed6")
    for e in events:
        marker = "v" if e["kind"] != "rejoined" else "^"
        ax.plot(e["step"], len(e["agents_after"]), marker, color="#c92a2a")
        ax.annotate(f"{e['agent']} {e['kind']}", (e["step"], len(e["agents_after"])),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("agents")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(counts) + 0.5)
    ax.set_title("membership over time", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def consensus(run: RunData) -> Figure | None:
    """``gossip``: the consensus distance against step, log scale (None for other runs)."""
    points = (run.summary.get("gossip") or {}).get("consensus") or []
    if not points:
        return None
    fig = Figure(figsize=(10, 3), layout="constrained")
    ax = fig.subplots()
    xs, ys = [p[0] for p in points], [max(p[1], 1e-12) for p in points]
    ax.plot(xs, ys, color="#1c7ed6", marker="o", markersize=3)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("consensus distance")
    topology = (run.summary.get("gossip") or {}).get("topology", "?")
    ax.set_title(f"gossip ({topology}): distance of the agents' parameters to their mean",
                 fontsize=10)  # fmt: skip
    ax.grid(alpha=0.3)
    return fig


def draw_all(run: RunData) -> dict[str, bytes]:
    """Every plot of the run as PNG bytes, by file name (membership.png after a fault,
    timeline.png when it profiled,
    consensus.png for gossip)."""
    out = {name: _png(curves(run, key, label, scale)) for name, key, label, scale in CURVES}
    out["time_split.png"] = _png(time_split(run))
    gossip = consensus(run)
    if gossip is not None:
        out["consensus.png"] = _png(gossip)
    members = membership(run)
    if members is not None:
        out["membership.png"] = _png(members)
    profile = load_timeline(run.path)
    if profile is not None:
        out["timeline.png"] = _png(timeline_figure(profile))
    return out
