"""Benchmark records: every figure saved with its config, git SHA, machine and command.

Example:
    path = write_record("ddp_overhead", config={...}, figures={...})
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

RECORDS = Path(__file__).resolve().parent / "records"


def git_sha() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "loadavg_at_end": load,
    }


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
