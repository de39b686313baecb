"""Meters (torchmetrics) and sinks (JSONL, console)."""

from ddla.metrics.meters import METRIC_NAMES, evaluate
from ddla.metrics.sinks import ConsoleProgress, JsonlSink, human_bytes

__all__ = ["METRIC_NAMES", "ConsoleProgress", "JsonlSink", "evaluate", "human_bytes"]
