"""One self-contained HTML page for a run: numbers in tables, plots embedded as base64 PNG.

The page loads nothing from outside (no scripts, fonts or links), so it opens offline, can be
mailed as one file and renders in any browser.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from ddla.report.plots import label_of, time_rows
from ddla.report.rundir import RunData
from ddla.report.timeline import load_timeline, timeline_rows

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.1em; } .sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
"""

# Marks the page once loaded with how many plots decoded, so a headless browser test can tell
# that the embedded images really render (the only script; it fetches nothing).
_SCRIPT = """
window.addEventListener("load", () => {
  const ok = [...document.images].filter((i) => i.complete && i.naturalWidth > 0);
  document.body.dataset.imagesRendered = String(ok.length);
});
"""

#: (png file, caption) in page order.
FIGURES = (
    ("by_step.png", "Loss and accuracy vs step"),
    ("by_wall.png", "Loss and accuracy vs wall time"),
    ("by_bytes.png", "Loss and accuracy vs bytes sent"),
    ("time_split.png", "Per-agent time: compute, communication, waiting"),
    ("membership.png", "Agents in the run over time (lost and rejoined agents)"),
    ("timeline.png", "Profiled window: per-agent timeline of compute, communication, waiting"),
    ("consensus.png", "Gossip: consensus distance of the agents' parameters"),
)

_PROFILE_KEYS = ("compute_s", "eval_s", "comm_s", "wait_s", "link_modelled_s", "link_measured_s",
                 "bytes_sent", "bytes_received")  # fmt: skip


def _profile_section(run: RunData) -> str:
    """The profiled window's per-agent figures (none when the run did not profile)."""
    data = load_timeline(run.path)
    if data is None:
        return ""
    head = "".join(f"<th>{k}</th>" for k in _PROFILE_KEYS)
    body = "".join(
        f"<tr><td>{r['rank']}</td>"
        + "".join(
            f'<td class="num" data-key="profile.{r["rank"]}.{k}">{_fmt(r.get(k))}</td>'
            for k in _PROFILE_KEYS
        )
        + "</tr>"
        for r in timeline_rows(data)
    )
    a, b = data["window"]
    how = html.escape(str((data.get("alignment") or {}).get("rule", "")))
    return (
        f"<h2>Profile (steps {a} to {b - 1})</h2>"
        f"<p>Traces: <code>profile/agentN.json</code>, all agents on one axis in "
        f"<code>profile/merged.json</code> (Perfetto, chrome://tracing); clocks: {how}. "
        "Link time measured is the time in training transfers once waiting for the last "
        "member of a collective is taken out; modelled is what the link model charged.</p>"
        f'<table id="profile"><tr><th>agent</th>{head}</tr>{body}</table>'
    )


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"
    return html.escape(str(value))


def _table(rows: list[tuple[str, Any]], key_prefix: str) -> str:
    body = "".join(
        f'<tr><th>{html.escape(k)}</th><td class="num" data-key="{key_prefix}.{html.escape(k)}">'
        f"{_fmt(v)}</td></tr>"
        for k, v in rows
    )
    return f"<table>{body}</table>"


def render(run: RunData, pngs: dict[str, bytes]) -> str:
    """The report page of ``run`` with ``pngs`` (from :func:`~ddla.report.plots.draw_all`)."""
    s = run.summary
    comm, times = s.get("comm") or {}, s.get("time") or {}
    facts = [
        (k, s.get(k))
        for k in ("strategy", "agents", "dataset", "model", "partition", "seed", "steps")
        if k in s
    ]
    facts += [("link", run.link), ("clock", run.clock)]
    final = [(k, v) for k, v in (s.get("final") or {}).items()]
    totals = [
        ("bytes_sent", comm.get("bytes_sent")),
        ("bytes_received", comm.get("bytes_received")),
        (f"wall_s ({run.clock} clock)", times.get("wall_s")),
        ("compute_s", times.get("compute_s")),
        ("comm_s", times.get("comm_s")),
    ]
    wall = times.get("wall_s") or 0
    if wall and times.get("compute_s") is not None:
        totals.append(("compute utilization", times["compute_s"] / wall))
    agent_rows = "".join(
        f"<tr><td>{r['rank']}</td>"
        + "".join(
            f'<td class="num">{_fmt(r[k])}</td>'
            for k in ("wall_s", "compute_s", "comm_s", "wait_s")
        )
        + "</tr>"
        for r in time_rows(run)
    )
    site_rows = "".join(
        f"<tr><td>{r['site']}</td>"
        + "".join(
            f'<td class="num">{_fmt(r.get(k))}</td>'
            for k in ("samples", "accuracy", "precision", "recall", "f1", "loss")
        )
        + "</tr>"
        for r in s.get("sites") or []
    )
    sites = (
        "<h2>Per site (global model on each site's test data)</h2>"
        '<table id="sites"><tr><th>site</th><th>test samples</th><th>accuracy</th>'
        "<th>precision</th><th>recall</th><th>f1</th><th>loss</th></tr>"
        f"{site_rows}</table>"
        if site_rows
        else ""
    )
    data = s.get("data") or {}
    histogram = ""
    if data.get("counts"):
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in data.get("classes", []))
        body = "".join(
            f"<tr><td>{rank}</td><td>{html.escape(str(path))}</td>"
            + "".join(f'<td class="num">{_fmt(v)}</td>' for v in row)
            + "</tr>"
            for rank, (path, row) in enumerate(zip(data["sources"], data["counts"], strict=False))
        )
        histogram = (
            "<h2>Data at each agent (training samples per class, agreed before training)</h2>"
            f'<table id="histogram"><tr><th>agent</th><th>source</th>{head}</tr>{body}</table>'
        )
    figures = "".join(
        f'<figure><img alt="{html.escape(caption)}" id="{name.removesuffix(".png")}" '
        f'src="data:image/png;base64,{base64.b64encode(pngs[name]).decode()}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption in FIGURES
        if name in pngs
    )
    config = (
        f"<h2>Configuration</h2><pre>{html.escape(run.config_text)}</pre>"
        if run.config_text
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>ddla report — {html.escape(run.path.name)}</title>
<style>{_CSS}</style></head><body>
<h1>ddla run report</h1>
<p class="sub">{html.escape(str(run.path))} — {html.escape(label_of(run))}</p>
<h2>Run</h2>{_table(facts, "run")}
<h2>Final metrics (global model)</h2>{_table(final, "final")}
{sites}
{histogram}
<h2>Communication and time</h2>{_table(totals, "total")}
<h2>Per agent</h2>
<table><tr><th>agent</th><th>wall_s</th><th>compute_s</th><th>comm_s</th><th>waiting_s</th></tr>
{agent_rows}</table>
{_profile_section(run)}
<h2>Plots</h2>{figures}
{config}
<script>{_SCRIPT}</script>
</body></html>
"""
