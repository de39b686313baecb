"""data.preprocess and Job(preprocess=...) in real training runs (gloo agents, ddla.agent.train).

A 2-agent digits run with ``pca:8`` fits one transform on both shards, trains the zoo MLP on 8
inputs, saves the transform beside the model and each agent's own model
(``train.keep_agent_models``); ``ddla eval`` through the saved transform reproduces the run's
final accuracy; ``ddla merge`` of the run's agents gives their exact parameter average. A
Job's feature extractor feeds the statistics and ``data.share=features:F`` pools features.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ddla.agent import train
from ddla.cli import app
from ddla.config import RunConfig
from ddla.data.preprocess.transform import Transform
from ddla.errors import AccessDeniedError
from ddla.job import Job, job_from_config
from ddla.models import ModelConfig, build_model, load_model
from ddla.testing import run_agents

pytestmark = pytest.mark.dist
runner = CliRunner()
BASE = [
    "data.dataset=digits", "model.hidden=32", "train.steps=30", "train.eval_every=0",
    "optim.schedule=constant", "sync.strategy=local_sgd", "sync.every=10",
]  # fmt: skip


def _pca_run(transport, out):
    torch.set_num_threads(1)
    sets = [*BASE, f"agents={transport.world_size}", f"out={out}", "data.preprocess=pca:8",
            "train.keep_agent_models=true"]  # fmt: skip
    config = RunConfig.load(None, sets)
    return train(job_from_config(config), config, transport, progress=False)


def test_pca_run_saves_one_transform_eval_applies_it_and_merge_averages_agents(tmp_path):
    out = tmp_path / "run"
    summary = run_agents(_pca_run, 2, str(out), timeout_s=600)[0]
    meta = json.loads((out / "model.json").read_text())
    assert meta["input_shape"] == [8] and meta["preprocess"]["kind"] == "pca:8"
    files = [out / "model.preprocess.safetensors"] + [
        out / "agents" / f"agent{r}.preprocess.safetensors" for r in (0, 1)
    ]
    # Every agent holds the identical transform, bit for bit (the files' header order of the
    # metadata may differ: safetensors writes it from a hash map).
    loaded = [Transform.load(f) for f in files]
    assert all(t.equal(loaded[0]) for t in loaded[1:])
    # The iid shards of the 2 agents together are the whole training set: the fit on them is
    # numpy's PCA of all of it (up to each eigenvector's sign, fixed positive at its largest).
    from ddla.data import load_dataset

    x = load_dataset("digits", seed=0).x_train.reshape(-1, 64).double().numpy()
    values, vectors = np.linalg.eigh(np.cov(x, rowvar=False, bias=True))
    top = vectors[:, np.argsort(values)[::-1][:8]]
    top = top * np.sign(top[np.abs(top).argmax(axis=0), np.arange(8)])
    fitted = Transform.load(files[0])
    torch.testing.assert_close(fitted.components, torch.from_numpy(top), rtol=1e-6, atol=1e-8)
    assert fitted.count == len(x)
    # ddla eval applies the transform: the same accuracy the run reported for its model.
    res = runner.invoke(app, ["eval", str(out / "model.safetensors")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    shown = float(re.search(r"accuracy\s*│\s*([\d.]+)%", res.output).group(1)) / 100
    assert shown == pytest.approx(summary["final"]["accuracy"], abs=1e-4)
    # ddla merge RUN_DIR fuses the agents' own models: their exact average.
    res = runner.invoke(app, ["merge", str(out), "--out", str(tmp_path / "m")],
                        env={"COLUMNS": "200"})  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "run/agent0" in res.output and "merged (average)" in res.output
    agents = [load_model(out / "agents" / f"agent{r}.safetensors")[0].state_dict() for r in (0, 1)]
    merged = load_model(tmp_path / "m" / "model.safetensors")[0].state_dict()
    for key, value in merged.items():
        assert torch.equal(value, (agents[0][key] + agents[1][key]) / 2), key
    assert Transform.load(tmp_path / "m" / "model.preprocess.safetensors").equal(loaded[0])


PROJECTION = torch.randn(64, 16, generator=torch.Generator().manual_seed(7)) / 8


def project(x: torch.Tensor) -> torch.Tensor:
    """A fixed feature extractor: 64 pixels -> 16 features."""
    return torch.tanh(x.reshape(len(x), -1) @ PROJECTION)


def _feature_run(transport, out, key, policy):
    torch.set_num_threads(1)
    sets = [*BASE, f"agents={transport.world_size}", f"out={out}", "data.preprocess=standardize",
            "security.enabled=true", f"security.secret_file={key}", f"security.policy={policy}",
            "data.share=features:0.1"]  # fmt: skip
    config = RunConfig.load(None, sets)
    base = job_from_config(RunConfig.load(None, BASE))
    model = build_model(ModelConfig(name="mlp", hidden=32), input_shape=(16,), num_classes=10)
    job = Job(model=model, train=base.train, test=base.test, classes=base.classes,
              name="digits-features", preprocess=project)  # fmt: skip
    try:
        summary = train(job, config, transport, progress=False)
    except AccessDeniedError as exc:
        return f"denied: {exc}"
    audit = Path(out) / "audit" / f"agent{transport.rank}.jsonl"
    return summary, [json.loads(line)["event"] for line in audit.read_text().splitlines()]


@pytest.mark.slow  # two 2-agent runs with the security handshake
def test_feature_hook_feeds_the_statistics_and_the_shared_pool_carries_features(tmp_path):
    key = tmp_path / "run.key"
    assert runner.invoke(app, ["keygen", "--out", str(key)]).exit_code == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text("agents:\n  '*':\n    - {peers: '*', kinds: [features], max_samples: 500}\n")
    out = tmp_path / "run"
    results = run_agents(_feature_run, 2, str(out), str(key), str(policy), timeout_s=600)
    summary, events = results[0]
    assert "share" in events  # the pool was exchanged (raw 1x8x8 rows could not join 16-wide)
    assert summary["final"]["accuracy"] > 0.1
    meta = json.loads((out / "model.json").read_text())
    assert meta["input_shape"] == [16] and meta["preprocess"]["input_shape"] == [16]
    # A policy granting only raw samples refuses to share features.
    policy.write_text("agents:\n  '*':\n    - {peers: '*', kinds: [samples], max_samples: 500}\n")
    denied = run_agents(_feature_run, 2, str(tmp_path / "r2"), str(key), str(policy),
                        timeout_s=600)  # fmt: skip
    assert all(d.startswith("denied") and "shared features" in d for d in denied), denied
