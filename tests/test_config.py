"""RunConfig: files, overrides, validation errors that name the field and allowed values."""

from __future__ import annotations

import pytest

from ddla.config import RunConfig
from ddla.errors import ConfigError


def test_defaults_are_the_documented_job() -> None:
    cfg = RunConfig()
    assert (cfg.agents, cfg.data.dataset, cfg.sync.strategy) == (4, "mnist1d", "allreduce")


def test_overrides_are_typed() -> None:
    cfg = RunConfig.load(
        None, ["agents=2", "optim.lr=0.5", "train.steps=7", "data.partition=dirichlet:0.3"]
    )
    assert cfg.agents == 2 and cfg.optim.lr == 0.5 and cfg.train.steps == 7
    assert cfg.data.partition == "dirichlet:0.3"


def test_yaml_and_toml_files(tmp_path) -> None:
    y = tmp_path / "run.yaml"
    y.write_text("agents: 3\nsync:\n  strategy: allreduce\ntrain:\n  steps: 11\n")
    t = tmp_path / "run.toml"
    t.write_text("agents = 5\n[data]\ndataset = 'digits'\n")
    cy = RunConfig.load(y, ["train.steps=12"])
    assert (cy.agents, cy.sync.strategy, cy.train.steps) == (3, "allreduce", 12)
    assert RunConfig.load(y).train.steps == 11  # the file's value without the override
    ct = RunConfig.load(t)
    assert (ct.agents, ct.data.dataset) == (5, "digits")


@pytest.mark.parametrize(
    ("override", "needle", "allowed"),
    [
        ("sync.strategy=nope", "sync.strategy", "allreduce"),
        ("data.dataset=imagenet", "data.dataset", "fashion-mnist"),
        ("model.name=resnet", "model.name", "cnn"),
        ("data.partition=zipf:2", "zipf", "dirichlet:ALPHA"),
        ("agents=0", "agents", "--agents"),
        ("optim.name=lion", "optim.name", "adamw"),
        ("train.nope=1", "train.nope", "train.steps"),
        ("train.steps=ten", "train.steps", None),
        ("comm.backend=mpi", "comm.backend", "gloo"),
    ],
)
def test_bad_values_name_the_field(override: str, needle: str, allowed: str | None) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.load(None, [override])
    text = f"{info.value} {info.value.help or ''}"
    assert needle in text
    if allowed:
        assert allowed in text


def test_malformed_override_and_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="malformed override"):
        RunConfig.load(None, ["agents"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("agents: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid"):
        RunConfig.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        RunConfig.load(tmp_path / "missing.yaml")


def test_round_trip_through_dict() -> None:
    cfg = RunConfig.load(None, ["agents=2", "sync.every=3"])
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
