"""summary.json's ``comm`` counts compressed bytes exactly: checked against a hand count."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ddla.agent import train
from ddla.config import RunConfig
from ddla.job import job_from_config
from ddla.testing import run_agents

WORLD = 3  # from 3 agents on, int8/int4 take the reduce-scatter scheme (fewer bytes)
STEPS = 12
EVERY = 5
OVERRIDES = [
    "data.dataset=digits",
    "data.batch_size=16",
    "model.hidden=8",
    f"train.steps={STEPS}",
    "train.eval_every=5",
    "sync.strategy=diloco",
    f"sync.every={EVERY}",
    "sync.compress=int8",
]


def _config(out: Path, extra: list[str]) -> RunConfig:
    return RunConfig.load(None, [*OVERRIDES, *extra, f"agents={WORLD}", f"out={out}"])


def _agent(transport, runs: list[tuple[str, list[str]]]) -> None:
    for out, extra in runs:  # one set of processes for all cases: spawning is the slow part
        config = _config(Path(out), extra)
        transport.stats.reset()  # each run's summary counts its own bytes
        train(job_from_config(config), config, transport, progress=False)


def _hand_count(config: RunConfig, payload_bytes, block: int | None) -> int:
    sizes = [math.prod(p.shape) for p in job_from_config(config).model.parameters()]
    syncs = STEPS // EVERY + (1 if STEPS % EVERY else 0)  # 5, 10, and finish() at 12
    if block is None:
        # all-gather of payloads: each agent sends its payload to the other WORLD - 1 agents.
        return syncs * (WORLD - 1) * sum(payload_bytes(n) for n in sizes)
    # int8/int4 (fewer bytes than the all-gather here: 610 values, 3 agents; checked below):
    # the parameters as one vector cut into WORLD chunks of whole blocks; each agent
    # sends WORLD - 1 quantized chunks (all-to-all), then its quantized mean chunk to the
    # WORLD - 1 others (all-gather).
    chunk = math.ceil(sum(sizes) / (WORLD * block)) * block
    scatter = 2 * (WORLD - 1) * payload_bytes(chunk)
    assert scatter < (WORLD - 1) * sum(payload_bytes(n) for n in sizes)
    return syncs * scatter


@pytest.mark.dist
def test_summary_comm_bytes_equal_hand_count(tmp_path: Path) -> None:
    cases = {
        "int8": (["sync.compress=int8"], lambda n: n + 4 * math.ceil(n / 128), 128),
        "int4": (
            ["sync.compress=int4:32"],
            lambda n: math.ceil(n / 2) + 4 * math.ceil(n / 32),
            32,
        ),
        "topk": (["sync.compress=topk:0.1"], lambda n: 8 * math.ceil(0.1 * n), None),
        "int8-gather": (  # per-tensor payloads, all-gathered
            ["sync.compress=int8", "sync.quantized_reduce=gather"],
            lambda n: n + 4 * math.ceil(n / 128),
            None,
        ),
    }
    for name in cases:
        (tmp_path / name).mkdir()
    runs = [(str(tmp_path / name), extra) for name, (extra, *_) in cases.items()]
    run_agents(_agent, WORLD, runs, timeout_s=180)
    for name, (extra, payload_bytes, block) in cases.items():
        out = tmp_path / name
        summary = json.loads((out / "summary.json").read_text())
        expected = _hand_count(_config(out, extra), payload_bytes, block)
        per_agent = summary["comm"]["per_agent"]
        assert [a["bytes_sent"] for a in per_agent] == [expected] * WORLD, name
        assert [a["bytes_received"] for a in per_agent] == [expected] * WORLD, name
        assert summary["comm"]["bytes_sent"] == WORLD * expected
        # the last metrics line of the run carries the same cumulative count
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["agent"] == "global" and rows[-1]["bytes_sent"] == WORLD * expected
