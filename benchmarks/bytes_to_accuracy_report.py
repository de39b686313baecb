"""Analysis of a ``bytes_to_accuracy.py`` invocation: per-run figures from the run directories,
the Markdown table, the goal verdicts and the plot (accuracy vs bytes per agent).

Kept apart from the sweep itself so that ``--analyse-only`` and other targets re-use the same
code on recorded run directories without training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The strategies the goal is about: the DiLoCo family.
FAMILY = ("diloco", "streaming_diloco")
GOAL_RATIO = 1000
GOAL_POINTS = 1.0


def run_name(partition: str, run: dict[str, Any]) -> str:
    h = "" if run["strategy"] == "allreduce" else f"-H{run['every']}"
    return f"{partition.replace(':', '')}-{run['strategy']}-{run['compress']}{h}"


def analyse(out: Path, run: dict[str, Any], targets: list[float], agents: int) -> dict[str, Any]:
    """Steps/bytes per agent to each target, final accuracy, wall time of one run directory."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["agent"] == "global"]
    summary = json.loads((out / "summary.json").read_text())
    per_agent_sent = [a["bytes_sent"] for a in summary["comm"]["per_agent"]]
    return figures(
        run,
        rows,
        targets,
        agents,
        final_accuracy=summary["final"]["accuracy"],
        bytes_per_agent=max(per_agent_sent),
        wall_s=summary["time"]["wall_s"],
    )


def analyse_recorded(recorded: dict[str, Any], targets: list[float], agents: int) -> dict[str, Any]:
    """The same figures from a record's result (its curve holds every global evaluation).

    For a fresh checkout, where the run directories (not in git) are absent: the curve's
    bytes are ``bytes_sent // agents``, so multiplying back gives the same figures exactly.
    """
    rows = [
        {"step": step, "bytes_sent": per_agent * agents, "accuracy": acc}
        for step, per_agent, acc in recorded["curve"]
    ]
    run = {k: recorded[k] for k in ("partition", "strategy", "compress", "every")}
    return figures(
        run,
        rows,
        targets,
        agents,
        final_accuracy=recorded["final_accuracy"],
        bytes_per_agent=recorded["bytes_per_agent"],
        wall_s=recorded["wall_s"],
    )


def figures(
    run: dict[str, Any],
    rows: list[dict[str, Any]],
    targets: list[float],
    agents: int,
    *,
    final_accuracy: float,
    bytes_per_agent: int,
    wall_s: float,
) -> dict[str, Any]:
    """Per-run figures from the global evaluations ``rows`` (step, bytes_sent, accuracy)."""
    last_step = rows[-1]["step"]
    periodic_sync_only = run["strategy"] in ("local_sgd", "diloco")
    to_target = {}
    for target in targets:
        reached = None
        for r in rows:
            synced = (
                not periodic_sync_only or r["step"] % run["every"] == 0 or r["step"] == last_step
            )
            if synced and r["accuracy"] >= target:
                reached = r
                break
        to_target[f"{target:g}"] = {
            "steps": reached["step"] if reached else None,
            "bytes_per_agent": reached["bytes_sent"] // agents if reached else None,
        }
    return {
        **run,
        "to_target": to_target,
        "final_accuracy": final_accuracy,
        "best_accuracy": max(r["accuracy"] for r in rows),
        "bytes_per_agent": bytes_per_agent,
        "wall_s": wall_s,
        "curve": [(r["step"], r["bytes_sent"] // agents, r["accuracy"]) for r in rows],
    }


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def table(results: list[dict[str, Any]], targets: list[float]) -> str:
    """Markdown table; ratios against allreduce fp32 of the same partition."""
    head = "| partition | strategy | wire | H |"
    for t in targets:
        head += f" steps to {t:.0%} | bytes/agent to {t:.0%} | × fewer than allreduce |"
    head += " final acc | Δ acc vs allreduce | bytes/agent (whole run) | wall s |"
    lines = [head, "|---" * (4 + 3 * len(targets) + 4) + "|"]
    base = {
        r["partition"]: r
        for r in results
        if r["strategy"] == "allreduce" and r["compress"] == "fp32"
    }
    for r in results:
        b = base.get(r["partition"])
        h = "—" if r["strategy"] == "allreduce" else str(r["every"])
        line = f"| {r['partition']} | {r['strategy']} | {r['compress']} | {h} |"
        for t in targets:
            mine = r["to_target"][f"{t:g}"]
            ref = b["to_target"][f"{t:g}"] if b else {"bytes_per_agent": None}
            ratio = "—"
            if ref["bytes_per_agent"] and mine["bytes_per_agent"]:
                ratio = f"{ref['bytes_per_agent'] / mine['bytes_per_agent']:,.0f}"
            line += f" {mine['steps'] or 'not reached'} | {fmt_bytes(mine['bytes_per_agent'])} |"
            line += f" {ratio} |"
        delta = f"{100 * (r['final_accuracy'] - b['final_accuracy']):+.2f}" if b else "—"
        line += f" {100 * r['final_accuracy']:.2f} | {delta} | {fmt_bytes(r['bytes_per_agent'])}"
        line += f" | {r['wall_s']:.0f} |"
        lines.append(line)
    return "\n".join(lines)


def is_baseline(run: dict[str, Any]) -> bool:
    return run["strategy"] == "allreduce" and run["compress"] == "fp32"


def goal(results: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    """Per partition: the DiLoCo-family run reaching ``target`` with the fewest bytes among those
    whose final accuracy is within ``GOAL_POINTS`` of ``allreduce`` fp32, and the verdict."""
    verdicts = []
    key = f"{target:g}"
    for part in dict.fromkeys(r["partition"] for r in results):
        base = next((r for r in results if r["partition"] == part and is_baseline(r)), None)
        if base is None:
            continue  # --only without allreduce fp32: nothing to compare against
        ref = base["to_target"][key]["bytes_per_agent"]
        ok = [
            r
            for r in results
            if r["partition"] == part
            and r["strategy"] in FAMILY
            and r["to_target"][key]["bytes_per_agent"]
            and 100 * (r["final_accuracy"] - base["final_accuracy"]) >= -GOAL_POINTS
        ]
        best = min(ok, key=lambda r: r["to_target"][key]["bytes_per_agent"], default=None)
        ratio = ref / best["to_target"][key]["bytes_per_agent"] if ref and best else None
        verdicts.append(
            {
                "partition": part,
                "target": target,
                "baseline_bytes_per_agent": ref,
                "best": run_name(part, best) if best else None,
                "ratio": ratio,
                "delta_points": 100 * (best["final_accuracy"] - base["final_accuracy"])
                if best
                else None,
                "met": bool(ratio and ratio >= GOAL_RATIO),
            }
        )
    return verdicts


def goal_lines(verdicts: list[dict[str, Any]]) -> str:
    lines = []
    for v in verdicts:
        head = f"- {v['partition']}, target {v['target']:.0%}: "
        if v["baseline_bytes_per_agent"] is None:
            lines.append(head + "allreduce never reached it: no baseline")
        elif v["best"] is None:
            lines.append(head + "no DiLoCo-family run reached it within 1 point of allreduce")
        else:
            verdict = "met" if v["met"] else f"missed by {GOAL_RATIO / v['ratio']:.2f}x"
            lines.append(
                head + f"best {v['best']}: {v['ratio']:,.0f}x fewer bytes per agent, final "
                f"{v['delta_points']:+.2f} points -> goal (>= {GOAL_RATIO}x) {verdict}"
            )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Accuracy vs bytes per agent (log x): a row per partition, a column per strategy, each
    panel with ``allreduce`` fp32 in black for reference; colour is H, line style the wire."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    partitions = list(dict.fromkeys(r["partition"] for r in results))
    strategies = list(dict.fromkeys(r["strategy"] for r in results))
    fig, axes = plt.subplots(
        len(partitions),
        len(strategies),
        figsize=(4.2 * len(strategies), 3.4 * len(partitions)),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    wires = {"fp32": "-", "int8": "--", "int4": ":"}
    colours = {1: "tab:grey", 10: "tab:blue", 50: "tab:green", 100: "tab:orange", 500: "tab:red"}
    for row, part in zip(axes, partitions, strict=True):
        mine = [r for r in results if r["partition"] == part]
        base = [r for r in mine if is_baseline(r)]
        for ax, strategy in zip(row, strategies, strict=True):
            for r in [*base, *[r for r in mine if r["strategy"] == strategy and r not in base]]:
                pts = [(b, a) for _, b, a in r["curve"] if b > 0]
                if not pts:
                    continue
                h = "" if r["strategy"] == "allreduce" else f" H={r['every']}"
                ax.plot(
                    *zip(*pts, strict=True),
                    wires[r["compress"]],
                    color="black" if r in base else colours.get(r["every"], "tab:purple"),
                    lw=1.4 if r in base else 1.0,
                    label=("allreduce fp32" if r in base else f"{r['compress']}{h}"),
                )
            ax.axhline(0.88, color="grey", lw=0.6)
            ax.set_xscale("log")
            ax.set_ylim(0.7, 0.9)
            ax.set_title(f"{strategy} — {part}", fontsize=9)
            ax.legend(fontsize=5, ncol=2, loc="lower right")
        row[0].set_ylabel("test accuracy (global model)")
    for ax in axes[-1]:
        ax.set_xlabel("bytes sent per agent")
    fig.suptitle("Fashion-MNIST, MLP, 4 agents: accuracy vs bytes (grey line: 88%)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
