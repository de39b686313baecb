"""Report a partition: a rich table for people and a JSON-ready dict for run records.

Example:
    >>> import numpy as np
    >>> labels = np.array([0, 0, 1, 1, 1])
    >>> parts = [np.array([0, 2]), np.array([1, 3, 4])]
    >>> partition_stats(parts, labels, num_classes=2)["class_counts"]
    [[1, 1], [1, 2]]
    >>> partition_table(parts, labels, ("cat", "dog")).row_count
    2
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from rich import box
from rich.table import Table

__all__ = ["class_counts", "partition_stats", "partition_table"]


def class_counts(
    parts: Sequence[np.ndarray], labels: np.ndarray | torch.Tensor, num_classes: int
) -> np.ndarray:
    """``[n_agents, num_classes]`` matrix of how many samples of each class each agent holds."""
    labels = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    return np.stack(
        [np.bincount(labels[np.asarray(p, dtype=np.int64)], minlength=num_classes) for p in parts]
    )


def partition_stats(
    parts: Sequence[np.ndarray], labels: np.ndarray | torch.Tensor, num_classes: int
) -> dict:
    """Per-agent sizes and class counts as plain Python numbers (``json.dumps`` works).

    Keys: ``n_agents``, ``num_samples`` (labels given), ``assigned`` (samples dealt to
    agents), ``dropped``, ``sizes``, ``class_counts`` (one list per agent),
    ``classes_per_agent``, ``mean_classes_per_agent``, ``min_size``, ``max_size``.
    """
    counts = class_counts(parts, labels, num_classes)
    sizes = counts.sum(axis=1)
    present = (counts > 0).sum(axis=1)
    return {
        "n_agents": len(parts),
        "num_samples": len(labels),
        "assigned": int(sizes.sum()),
        "dropped": len(labels) - int(sizes.sum()),
        "sizes": sizes.tolist(),
        "class_counts": counts.tolist(),
        "classes_per_agent": present.tolist(),
        "mean_classes_per_agent": float(present.mean()),
        "min_size": int(sizes.min()),
        "max_size": int(sizes.max()),
    }


def partition_table(
    parts: Sequence[np.ndarray],
    labels: np.ndarray | torch.Tensor,
    classes: Sequence[str],
    *,
    title: str | None = "Data partition",
) -> Table:
    """One row per agent (samples, per-class counts, classes present) and a total footer.

    Print it with ``rich.console.Console().print(table)``. Long class names would not fit an
    80-column terminal (rich then truncates every header and count to "1…"): columns are then
    headed by class index and the caption maps indices to names.
    """
    counts = class_counts(parts, labels, len(classes))
    totals = counts.sum(axis=0)
    digits = len(str(int(totals.sum())))
    short = all(len(str(name)) <= max(digits, 3) for name in classes)
    legend = None if short else ", ".join(f"{i}={name}" for i, name in enumerate(classes))
    # No vertical rules, one space between columns: 10 classes of 5-digit counts fit 80 columns.
    table = Table(
        title=title, caption=legend, show_footer=True, box=box.SIMPLE_HEAD, padding=(0, 0)
    )
    table.add_column("agent", footer="total", justify="right")
    table.add_column("samples", footer=str(int(totals.sum())), justify="right")
    for i, (name, total) in enumerate(zip(classes, totals, strict=True)):
        table.add_column(str(name) if short else str(i), footer=str(int(total)), justify="right")
    table.add_column("classes", footer=str(int((totals > 0).sum())), justify="right")
    for agent, row in enumerate(counts):
        table.add_row(
            str(agent),
            str(int(row.sum())),
            *(str(int(v)) for v in row),
            str(int((row > 0).sum())),
        )
    return table
