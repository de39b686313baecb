"""Benchmark records: every figure saved with its config, git SHA, machine and command.

Example:
    path = write_record("ddp_overhead", config={...}, figures={...})
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from ddla.bench import git_sha, machine

__all__ = ["RECORDS", "git_sha", "machine", "write_record"]

RECORDS = Path(__file__).resolve().parent / "records"


def write_record(name: str, *, config: dict[str, Any], figures: Any) -> Path:
    """Write ``records/<name>-<timestamp>.json`` and ``records/<name>-latest.json``."""
    RECORDS.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_sha": git_sha(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "config": config,
        "figures": figures,
    }
    text = json.dumps(record, indent=2) + "\n"
    path = RECORDS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(text)
    (RECORDS / f"{name}-latest.json").write_text(text)
    return path
