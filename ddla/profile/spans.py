"""ddla's spans in a torch.profiler trace: user annotations opened and closed by ddla's seams.

A :class:`Spans` is handed to the agent's Transport (``transport.spans``) when a run profiles;
without profiling the attribute is None and the seams skip it with one comparison. While the
profiling window is open (:attr:`Spans.active`), each span is a
``torch.profiler.record_function`` annotation — the profiler measures it, on whichever thread
closes it (the session profiles all threads, so a DDP hook's all-reduce that completes on
gloo's thread is still one span) — and ddla keeps the facts the profiler cannot take (bytes,
peer, tag, group, modelled link seconds), which :mod:`ddla.profile.export` writes into the
span's ``args`` in the exported trace.

Example (no profiler running: the annotations are cheap no-ops, the facts are still kept):
    >>> spans = Spans()
    >>> spans.active = True
    >>> with spans.span("ddla.compute", step=3):
    ...     pass
    >>> [(r.name, r.args) for r in spans.records]
    [('ddla.compute', {'step': 3})]
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class SpanRecord:
    """One span ddla opened: its name, its facts, and the order it was opened in."""

    name: str
    seq: int
    args: dict[str, Any] = field(default_factory=dict)
    #: The open annotation (a ``record_function``); None once closed.
    handle: Any = None


class Spans:
    """Opens and closes ddla's annotations; keeps their facts in :attr:`records`."""

    def __init__(self) -> None:
        #: True while the profiling window is open; spans outside it are not opened.
        self.active = False
        self.records: list[SpanRecord] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def begin(self, name: str, **args: Any) -> SpanRecord | None:
        """Open span ``name`` (None outside the window); close it with :meth:`end`."""
        if not self.active:
            return None
        from torch.autograd.profiler import record_function

        handle = record_function(name)
        handle.__enter__()
        with self._lock:
            record = SpanRecord(name, next(self._seq), dict(args), handle)
            self.records.append(record)
        return record

    def end(self, record: SpanRecord | None, **args: Any) -> None:
        """Close ``record`` (from any thread), adding ``args`` to its facts; None is a no-op."""
        if record is None or record.handle is None:
            return
        handle, record.handle = record.handle, None
        record.args.update(args)
        handle.__exit__(None, None, None)

    @contextmanager
    def span(self, name: str, **args: Any) -> Iterator[SpanRecord | None]:
        """``with spans.span("ddla.wait", reason="server"):`` — a span around a block."""
        record = self.begin(name, **args)
        try:
            yield record
        except BaseException as exc:
            self.end(record, error=type(exc).__name__)
            raise
        self.end(record)

    def wait(self, reason: str, **args: Any) -> Any:
        """A ``ddla.wait`` span: time this agent blocks on a peer outside a transfer
        (a straggler, a server), shown as waiting on the report's timeline."""
        return self.span("ddla.wait", reason=reason, **args)

    def take(self) -> list[SpanRecord]:
        """The records so far (closed ones), forgetting them: the window's facts."""
        with self._lock:
            records, self.records = self.records, []
        return records
