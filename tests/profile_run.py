"""A real profiled run shared by the profile and report tests: 2 agents, DiLoCo, wan-100."""

from __future__ import annotations

from pathlib import Path

import ddla

#: DiLoCo syncing every 5 steps for 20 steps, all profiled, on an emulated wan-100 link (real
#: clock: link time is slept, so it is in the trace), evaluation at step 10 inside the window.
PROFILED = [
    "agents=2", "data.dataset=digits", "model.hidden=64", "optim.schedule=constant",
    "sync.strategy=diloco", "sync.every=5", "train.steps=20", "train.eval_every=10",
    "comm.link=wan-100", "profile.steps=0:20",
]  # fmt: skip


def profiled_run(out: Path) -> Path:
    """Run :data:`PROFILED` into ``out`` and return it."""
    ddla.launch(overrides=[*PROFILED, f"out={out}"], progress=False, report=False)
    return out
