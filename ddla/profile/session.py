"""One agent's profiling window: start torch.profiler at step A, stop after step B-1, export.

The agent loop calls :meth:`ProfileSession.begin`, :meth:`~ProfileSession.step` and
:meth:`~ProfileSession.end` around each step (opening and exporting outside the step's timing,
so ``compute_s`` and ``train_s`` never include them); everything about profiling stays here, so
the loop gains a few lines and a run without ``--profile`` builds no session and
imports no ``torch.profiler``.

When the window opens, every agent starts its profiler and passes one barrier on the run's
Transport inside a ``ddla.align`` span (tag ``control``, so no strategy's bytes change): the
common instant that puts the agents' traces on one axis (:mod:`ddla.profile.export`). When it
closes, each agent writes ``OUT/profile/agent<rank>.json`` and sends its trace to rank 0
(``all_gather_object``, tag ``control``), which writes ``merged.json`` and ``timeline.json``.

Example (one agent; ``ddla run --profile`` does this on every agent)::

    session = ProfileSession(config.profile, transport, out=Path("runs/x"), total_steps=100)
    for step in range(100):
        session.begin(step)                 # opens the window at step A
        loss = session.step(step, compute)  # a ddla.compute span in the window
        session.end(step)                   # closes and exports it after step B-1
    session.close()
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddla.profile.config import ProfileConfig
from ddla.profile.export import agent_spans, alignment, enrich, merge
from ddla.profile.spans import Spans
from ddla.profile.timeline import totals

if TYPE_CHECKING:
    import torch

    from ddla.comm import Transport

log = logging.getLogger("ddla.agent")

PROFILE_DIR = "profile"


def attach_spans(config: ProfileConfig, transport: Transport) -> None:
    """Give ``transport`` (and every Transport derived from it later) ddla's spans when the
    run profiles; without profiling it keeps ``spans=None`` and its seams skip them."""
    if config.enabled:
        transport.spans = Spans()


class ProfileSession:
    """Opens, records and closes this agent's profiling window."""

    def __init__(
        self,
        config: ProfileConfig,
        transport: Transport,
        *,
        out: Path,
        total_steps: int,
        run_wide: Callable[[], Transport] | None = None,
        strategy: str = "",
    ) -> None:
        """``run_wide`` returns the Transport of every live agent (after a membership change,
        the new one); by default ``transport``."""
        if transport.spans is None:
            transport.spans = Spans()
        self.spans: Spans = transport.spans
        self.start, self.stop = config.window(total_steps=total_steps)
        self.out = Path(out) / PROFILE_DIR
        self._run_wide = run_wide or (lambda: transport)
        self.strategy = strategy
        self._prof: Any = None
        self._done = False
        self._facts: dict[str, Any] = {}

    def begin(self, step: int) -> None:
        """Before step ``step`` (outside its timing): open the window when it starts here."""
        if self._prof is None and not self._done and self.start <= step < self.stop:
            self._open(step)

    def step(self, step: int, compute: Callable[[int], torch.Tensor]) -> torch.Tensor:
        """Run ``compute(step)``, inside a ``ddla.compute`` span while the window is open."""
        if self._prof is None:
            return compute(step)
        with self.spans.span("ddla.compute", step=step):
            return compute(step)

    def end(self, step: int) -> None:
        """After step ``step`` (outside its timing): close and export the window there."""
        if self._prof is not None and step + 1 >= self.stop:
            self._close(step + 1)

    def _open(self, step: int) -> None:
        import torch

        # _ExperimentalConfig is torch.profiler's documented experimental_config argument;
        # profile_all_threads records spans closed on other threads (a DDP bucket's
        # all-reduce completes on gloo's thread), which the default profiler drops.
        from torch.profiler import ProfilerActivity, _ExperimentalConfig, profile

        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self._prof = profile(
            activities=activities,
            experimental_config=_ExperimentalConfig(profile_all_threads=True),
        )
        self._prof.start()
        self.spans.active = True
        transport = self._run_wide()
        with self.spans.span("ddla.align", step=step):
            transport.barrier()
        self._facts = {
            "rank": transport.global_ranks[transport.rank],
            "world_size": transport.world_size,
            "first_step": step,
            "clock": transport.clock.label,
            "link": transport.link_description,
            "strategy": self.strategy,
            "pid": os.getpid(),
        }
        log.info("profiling steps %d to %d", step, self.stop - 1)

    def _close(self, end_step: int) -> None:
        started = time.perf_counter()
        self.spans.active = False
        prof, self._prof, self._done = self._prof, None, True
        prof.stop()
        self.out.mkdir(parents=True, exist_ok=True)
        rank = self._facts["rank"]
        raw = self.out / f".agent{rank}.raw.json"
        prof.export_chrome_trace(str(raw))
        trace = json.loads(raw.read_text())
        raw.unlink()
        records = self.spans.take()
        unmatched = enrich(trace, records)
        self._facts |= {"end_step": end_step, "spans": len(records), "unmatched_spans": unmatched}
        # Stopping the profiler and writing the trace (not in any step's time).
        self._facts["export_s"] = round(time.perf_counter() - started, 4)
        trace["ddla"] = self._facts
        _write_json(self.out / f"agent{rank}.json", trace)
        transport = self._run_wide()
        traces = (
            transport.all_gather_object(trace, tag="control")
            if transport.world_size > 1
            else [trace]
        )
        if transport.rank == 0:
            self._write_merged(traces)
        log.info("profile written to %s (%d spans, %d unmatched)", self.out, len(records),
                 unmatched)  # fmt: skip

    def _write_merged(self, traces: list[dict[str, Any]]) -> None:
        traces = sorted(traces, key=lambda t: t["ddla"]["rank"])
        merged = merge(traces)
        _write_json(self.out / "merged.json", merged)
        spans = agent_spans(merged)
        figures = totals(spans)
        _write_json(
            self.out / "timeline.json",
            {
                "window": [self._facts["first_step"], self._facts["end_step"]],
                "strategy": self.strategy,
                "clock": self._facts["clock"],
                "link": self._facts["link"],
                "alignment": alignment(traces),
                "agents": [
                    {"rank": r, "totals": figures[r], "spans": spans[r]} for r in sorted(spans)
                ],
            },
        )

    def close(self) -> None:
        """Stop a window still open (a run that ended or failed inside it); nothing written."""
        if self._prof is not None:
            self.spans.active = False
            self._prof.stop()
            self._prof = None


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
