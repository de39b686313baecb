"""data.preprocess specs and the run-wide refusals (one line each), without agents."""

from __future__ import annotations

import pytest
import torch

from ddla.config import RunConfig
from ddla.data.preprocess import PreprocessSpec, parse_preprocess
from ddla.data.preprocess.transform import Transform, top_components
from ddla.errors import ConfigError
from ddla.faults import survives


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("none", None),
        ("standardize", PreprocessSpec(kind="standardize")),
        ("minmax", PreprocessSpec(kind="minmax")),
        ("pca:8", PreprocessSpec(kind="pca", k=8)),
        ("pca:3:whiten", PreprocessSpec(kind="pca", k=3, whiten=True)),
    ],
)
def test_specs_parse(spec, want):
    assert parse_preprocess(spec) == want
    if want is not None:
        assert str(want) == spec


@pytest.mark.parametrize(
    "bad", ["pca", "pca:0", "pca:x", "pca:4:white", "zscore", "pca:4:whiten:1"]
)
def test_bad_specs_are_refused_at_config_time(bad):
    with pytest.raises(ConfigError, match=r"data\.preprocess: cannot read"):
        RunConfig.load(None, [f"data.preprocess={bad}"])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["data.preprocess=minmax", "security.enabled=true", "security.secure_aggregation=true"],
         "minmax cannot run under security.secure_aggregation"),
        (["data.preprocess=pca:4", "model.stages=2", "agents=2"], "changes the input width"),
        (["data.preprocess=standardize", "data.pull_every=10", "security.enabled=true"],
         "mix peers' raw rows"),
        (["train.keep_agent_models=true", "model.stages=2", "agents=2"],
         "an agent holds only a stage or a shard"),
        (["data.share=features:2"], "data.share: cannot read"),
    ],
)  # fmt: skip
def test_combinations_that_cannot_be_covered_are_refused_in_one_line(overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        RunConfig.load(None, overrides)
    assert "\n" not in str(info.value) and info.value.help


def test_a_preprocessed_run_does_not_claim_to_survive_lost_agents():
    base = ["agents=2", "sync.strategy=local_sgd"]
    assert survives(RunConfig.load(None, base))
    assert not survives(RunConfig.load(None, [*base, "data.preprocess=standardize"]))


def test_transform_file_round_trip_and_shape(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 1, 2, 3, generator=g, dtype=torch.float64)
    flat = x.reshape(50, -1)
    cov = torch.cov(flat.T, correction=0)
    t = Transform(kind="pca:2:whiten", input_shape=(1, 2, 3), shift=flat.mean(0),
                  scale=torch.ones(6, dtype=torch.float64),
                  components=top_components(cov, 2, whiten=True), count=50)  # fmt: skip
    back = Transform.load(t.save(tmp_path / "t.safetensors"))
    assert back.equal(t) and back.count == 50 and back.output_shape == (2,)
    y = back(x.float())
    assert y.shape == (50, 2) and y.dtype == torch.float32
    # whitened: unit variance, uncorrelated components
    torch.testing.assert_close(torch.cov(y.double().T, correction=0), torch.eye(2,
                               dtype=torch.float64), atol=1e-5, rtol=0)  # fmt: skip
    with pytest.raises(Exception, match="fitted on"):
        back(torch.zeros(3, 6))
