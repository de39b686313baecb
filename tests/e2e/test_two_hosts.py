"""`ddla join` on two hosts with separate network stacks (two network namespaces, one veth link).

The host name resolves to loopback in both namespaces, as on many real machines: the run only
forms if `ddla join` hosts the rendezvous on the first, advertises the veth addresses and binds
gloo to the veth interfaces. The result is checked against a single-process reference, both
hosts' logs must name the same final model, and ddla's byte counts against the kernel's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from e2e_helpers import ROOT
from netns import TwoHosts, two_hosts, why_not
from safetensors.torch import load_file

from ddla.comm.agree import state_sha256
from ddla.config import RunConfig
from ddla.data import AgentBatches, partition
from ddla.job import job_from_config
from ddla.tasks import resolve_partition

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.dist,
    pytest.mark.skipif(why_not() is not None, reason=f"two-host test: {why_not()}"),
]

STEPS = 30
SETTINGS = [
    "data.dataset=digits",
    "data.batch_size=16",
    "model.hidden=64",
    "sync.strategy=allreduce",
    "optim.name=sgd",
    "optim.lr=0.1",
    "optim.momentum=0.9",
    "optim.schedule=constant",  # the reference below steps at a constant rate
    f"train.steps={STEPS}",
    "train.eval_every=0",
]
PORT = 29400


def _join(net: TwoHosts, host: int, out: Path, *extra: str) -> subprocess.Popen:
    sets = [a for kv in SETTINGS for a in ("--set", kv)]
    return subprocess.Popen(
        [*net.exec(host), sys.executable, "-m", "ddla.cli", "join",
         "--rendezvous", f"{net.addrs[0]}:{PORT}", "--nodes", "2", "--agents-per-node", "1",
         *sets, "--out", str(out), "--no-progress", *extra],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _reference() -> tuple[dict[str, torch.Tensor], float]:
    """Plain single-process SGD on the concatenation of both agents' batches: (state, accuracy)."""
    config = RunConfig.load(None, [*SETTINGS, "agents=2"])
    job = job_from_config(config)
    x, y = job.train
    spec = resolve_partition(config.data.partition, job.task_spec)  # auto -> iid here
    parts = partition(spec, job.partition_labels.numpy(), 2, config.train.seed)
    streams = [
        AgentBatches(p, batch_size=config.data.batch_size, seed=config.train.seed, rank=r)
        for r, p in enumerate(parts)
    ]
    opt = torch.optim.SGD(job.model.parameters(), lr=0.1, momentum=0.9)
    for step in range(STEPS):
        idx = torch.cat([torch.from_numpy(s.batch(step)) for s in streams])
        opt.zero_grad()
        torch.nn.functional.cross_entropy(job.model(x[idx]), y[idx]).backward()
        opt.step()
    x_test, y_test = job.test
    accuracy = (job.model(x_test).argmax(1) == y_test).float().mean().item()
    return job.model.state_dict(), accuracy


def _final_hash(log: Path) -> str:
    found = re.findall(r"final model sha256 ([0-9a-f]{64})", log.read_text())
    assert len(found) == 1, log.read_text()
    return found[0]


def test_two_hosts_train_one_model(tmp_path: Path, no_leftover_processes) -> None:
    outs = (tmp_path / "host0", tmp_path / "host1")
    start = time.monotonic()
    with two_hosts(rate="200mbit") as net:
        nodes = [_join(net, h, outs[h]) for h in (0, 1)]
        consoles = [n.communicate(timeout=600)[0] for n in nodes]
        link = [net.link_bytes(h) for h in (0, 1)]
    print(f"two-host run: {time.monotonic() - start:.1f} s wall, link {net.shaped or 'unshaped'}")
    assert [n.returncode for n in nodes] == [0, 0], consoles

    # What each node worked out from its own network stack, and said.
    assert f"hosts the rendezvous at {net.addrs[0]}:{PORT}" in consoles[0]
    assert f"advertises {net.addrs[0]}, gloo on {net.ifnames[0]}" in consoles[0]
    assert f"joins the rendezvous at {net.addrs[0]}:{PORT}" in consoles[1]
    assert f"advertises {net.addrs[1]}, gloo on {net.ifnames[1]}" in consoles[1]
    assert "accuracy" in consoles[0] and "rank 0's machine (192.168.77.1)" in consoles[1]

    # Host 0 (its address sorts first) holds rank 0: summary, model, report.
    summary = json.loads((outs[0] / "summary.json").read_text())
    assert summary["agents"] == 2 and summary["steps"] == STEPS
    assert summary["final"]["accuracy"] > 0.6
    assert (outs[0] / "report.html").is_file()
    assert not (outs[1] / "summary.json").exists()
    node1 = json.loads((outs[1] / "node.json").read_text())
    assert node1 | {"out": None} == {
        "out": None, "rendezvous": f"{net.addrs[0]}:{PORT}", "nodes": 2, "ranks": [1],
        "rank0_addr": net.addrs[0], "is_host": False, "local_addr": net.addrs[1],
        "gloo_ifname": net.ifnames[1],
    }  # fmt: skip
    assert json.loads((outs[0] / "node.json").read_text())["ranks"] == [0]

    # The same final model on both hosts, and it is the single-process reference's.
    model = load_file(outs[0] / "model.safetensors")
    hashes = [_final_hash(outs[h] / "logs" / f"agent{h}.log") for h in (0, 1)]
    assert hashes[0] == hashes[1] == state_sha256(model)
    reference, accuracy = _reference()
    for key, value in reference.items():
        torch.testing.assert_close(model[key], value, rtol=1e-5, atol=1e-6)
    assert summary["final"]["accuracy"] == pytest.approx(accuracy, abs=1 / 360)

    # Bytes: each agent's count is what crossed the link, plus TCP/IP and the rendezvous.
    per_agent = {a["rank"]: a for a in summary["comm"]["per_agent"]}
    for h in (0, 1):
        sent = per_agent[h]["bytes_sent"]
        assert sent > 0 and sent == per_agent[h]["bytes_received"]
        assert sent <= link[h]["tx"] <= 2 * sent, (h, sent, link[h])
        assert link[h]["tx"] == link[1 - h]["rx"]


def test_wrong_endpoint_fails_fast_with_the_fix(tmp_path: Path, no_leftover_processes) -> None:
    with two_hosts() as net:
        start = time.monotonic()
        res = subprocess.run(
            [*net.exec(1), sys.executable, "-m", "ddla.cli", "join",
             "--rendezvous", f"10.77.0.1:{PORT}", "--nodes", "2",
             "--set", "data.dataset=digits", "--out", str(tmp_path / "out")],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        took = time.monotonic() - start
    print(f"wrong endpoint: failed after {took:.1f} s")
    assert res.returncode != 0
    assert "error: no route from this machine to the rendezvous endpoint 10.77.0.1" in res.stderr
    assert "help: check the address in --rendezvous" in res.stderr
    assert "Traceback" not in res.stderr
