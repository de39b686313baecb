"""Write a run directory in the documented format (FOUNDATION.md), as `ddla run` does."""

from __future__ import annotations

import json
import math
from pathlib import Path


def write_run_dir(path: Path, *, agents: int = 3, evals: int = 6, clock: str = "virtual") -> Path:
    """Write summary.json, metrics.jsonl and config.yaml as a ``ddla run`` would."""
    path.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(1, evals + 1):
        step = 50 * i
        total_sent = 0
        for rank in range(agents):
            sent = 120_000 * i * (rank + 1)
            total_sent += sent
            lines.append(
                {
                    "step": step,
                    "agent": rank,
                    "loss": 2.3 * math.exp(-0.3 * i) + 0.05 * rank,
                    "accuracy": 0.5 + 0.06 * i - 0.01 * rank,
                    "precision": 0.5,
                    "recall": 0.5,
                    "f1": 0.5,
                    "bytes_sent": sent,
                    "bytes_received": sent,
                    "wall_s": 1.5 * i,
                    "compute_s": 1.2 * i,
                    "comm_s": 0.2 * i,
                }
            )
        lines.append(
            {
                "step": step,
                "agent": "global",
                "loss": 2.2 * math.exp(-0.3 * i),
                "accuracy": 0.52 + 0.06 * i,
                "precision": 0.6,
                "recall": 0.6,
                "f1": 0.6,
                "bytes_sent": total_sent,
                "bytes_received": total_sent,
                "wall_s": 1.5 * i,
                "compute_s": 1.2 * i * agents,
                "comm_s": 0.2 * i * agents,
            }
        )
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    summary = {
        "strategy": "diloco",
        "agents": agents,
        "dataset": "digits",
        "model": "mlp",
        "partition": "iid",
        "seed": 0,
        "steps": 50 * evals,
        "final": {"accuracy": 0.8734, "precision": 0.87, "recall": 0.86, "f1": 0.865, "loss": 0.41},
        "comm": {
            "bytes_sent": 4_321_000,
            "bytes_received": 4_321_000,
            "per_agent": [
                {
                    "rank": r,
                    "bytes_sent": 1_000,
                    "bytes_received": 1_000,
                    "compute_s": 7.0 - r,
                    "comm_s": 1.0 + r,
                }
                for r in range(agents)
            ],
        },
        "time": {"wall_s": 9.0, "compute_s": 7.0, "comm_s": 1.2},
        "link": {"profile": "wan-100", "clock": clock},
        "model_path": str(path / "model.safetensors"),
    }
    (path / "summary.json").write_text(json.dumps(summary))
    (path / "config.yaml").write_text("agents: 3\nsync:\n  strategy: diloco\n")
    return path
