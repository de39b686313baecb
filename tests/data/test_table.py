"""The partition report: JSON-ready stats and the rich table."""

from __future__ import annotations

import json

import numpy as np
from rich.console import Console

from ddla.data import partition, partition_stats, partition_table

LABELS = np.array([0, 0, 1, 1, 1, 2, 2, 0])
PARTS = [np.array([0, 1, 5]), np.array([2, 3, 4]), np.array([6])]


def test_stats_are_exact_and_json_serializable():
    stats = partition_stats(PARTS, LABELS, num_classes=4)
    assert json.loads(json.dumps(stats)) == stats
    assert stats["class_counts"] == [[2, 0, 1, 0], [0, 3, 0, 0], [0, 0, 1, 0]]
    assert stats["sizes"] == [3, 3, 1]
    assert stats["classes_per_agent"] == [2, 1, 1]
    assert stats["mean_classes_per_agent"] == 4 / 3
    assert (stats["assigned"], stats["dropped"], stats["num_samples"]) == (7, 1, 8)
    assert (stats["min_size"], stats["max_size"], stats["n_agents"]) == (1, 3, 3)


def render(table) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def test_table_has_one_row_per_agent_and_a_total_footer():
    table = partition_table(PARTS, LABELS, ("cat", "dog", "eel", "fox"))
    assert table.row_count == 3
    assert [c.header for c in table.columns] == [
        "agent",
        "samples",
        "cat",
        "dog",
        "eel",
        "fox",
        "classes",
    ]
    assert [c.footer for c in table.columns] == ["total", "7", "2", "3", "2", "0", "3"]
    text = render(table)
    cells = [line.split() for line in text.splitlines()]  # columns are space-separated
    assert ["0", "3", "2", "0", "1", "0", "2"] in cells
    assert ["1", "3", "0", "3", "0", "0", "1"] in cells
    assert ["total", "7", "2", "3", "2", "0", "3"] in cells


def test_table_on_a_real_partition_sums_to_the_dataset():
    labels = np.repeat(np.arange(3), 20)
    parts = partition("dirichlet:0.5", labels, n_agents=4, seed=0)
    table = partition_table(parts, labels, ("a", "b", "c"))
    assert table.columns[1].footer == "60"
    assert [c.footer for c in table.columns[2:5]] == ["20", "20", "20"]
