"""`ddla join` twice on this machine (endpoint 127.0.0.1, no root needed): nodes whose configs
differ are stopped together, each with the line naming the settings that differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import ROOT

from ddla.security.secret import fingerprint
from ddla.testing import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.dist]


def test_nodes_with_different_configs_stop_with_the_difference(
    tmp_path: Path, no_leftover_processes
) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "ddla.cli", "join", "--rendezvous", f"127.0.0.1:{port}",
             "--nodes", "2", "--set", "data.dataset=digits", "--set", f"train.steps={steps}",
             "--out", str(tmp_path / f"node{i}"), "--no-progress"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i, steps in enumerate((30, 31))
    ]  # fmt: skip
    outputs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [2, 2], outputs
    for output in outputs:
        assert "advertises 127.0.0.1" in output
        # rank 0 is the node that joined with the lower pid (both advertise 127.0.0.1)
        assert (
            "error: the agents do not run the same config: agent(s) 1 differ from agent 0 in "
            "train.steps: " in output
        ), output
        assert "30 vs 31" in output or "31 vs 30" in output, output
        assert "help: give every machine the same run file and --set options" in output
        assert "Traceback" not in output


def test_a_node_with_another_secret_is_refused_and_audited(
    tmp_path: Path, no_leftover_processes
) -> None:
    # Same run file on both machines, but each machine's own secret (as DDLA_SECRET): the
    # handshake must fail on both, audit the refusal with the secret's fingerprint, and write
    # no result.
    port = free_port()
    secrets = [os.urandom(32).hex(), os.urandom(32).hex()]
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "ddla.cli", "join", "--rendezvous", f"127.0.0.1:{port}",
             "--nodes", "2", "--set", "data.dataset=digits", "--set", "train.steps=5",
             "--set", "security.enabled=true", "--out", str(tmp_path / f"node{i}"),
             "--no-progress"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200",
                           "DDLA_SECRET": secret},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i, secret in enumerate(secrets)
    ]  # fmt: skip
    outputs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [6, 6], outputs
    for i, output in enumerate(outputs):
        errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "secret" in errors[0], output
        assert "Traceback" not in output
        out = tmp_path / f"node{i}"
        assert not (out / "summary.json").exists() and not (out / "model.safetensors").exists()
        logs = sorted((out / "audit").glob("agent*.jsonl"))
        assert logs, f"node {i} wrote no audit log"
        events = [json.loads(x) for x in logs[0].read_text().splitlines()]
        assert [e["event"] for e in events] == ["refuse"], events
        assert events[0]["data"]["secret"] == fingerprint(bytes.fromhex(secrets[i]))
