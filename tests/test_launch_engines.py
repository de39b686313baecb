"""Choosing a launch engine: the config section, the registry and its one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

import ddla
from ddla.config import LaunchConfig, RunConfig
from ddla.errors import ConfigError
from ddla.launch.engines import local_ranks, require, runner, with_engine


def test_engine_comes_from_the_run_file_and_overrides(tmp_path: Path) -> None:
    run_file = tmp_path / "run.yaml"
    run_file.write_text("launch:\n  engine: dask\n  address: tcp://127.0.0.1:8786\n")
    cfg = RunConfig.load(run_file)
    assert (cfg.launch.engine, cfg.launch.address) == ("dask", "tcp://127.0.0.1:8786")
    assert RunConfig.load(None, ["launch.engine=ray"]).launch.engine == "ray"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert with_engine(RunConfig(), "spark").launch.engine == "spark"
    assert with_engine(cfg, None) is cfg


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["launch.engine=slurm"], "unknown engine 'slurm'"),
        (["launch.address=auto"], "launch.address is for the ray and dask engines, not local"),
        (["launch.engine=ray", "launch.master=local[2]"], "launch.master is for the spark"),
        (["launch.engine=spark", "launch.address=auto"], "not spark"),
    ],
)
def test_bad_launch_settings_are_refused(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")) as info:
        RunConfig.load(None, overrides)
    assert info.value.help


def test_every_engine_is_registered() -> None:
    assert {runner(e).__name__ for e in ("local", "ray", "spark", "dask")} == {
        "run_local",
        "run_ray",
        "run_spark",
        "run_dask",
    }
    with pytest.raises(ConfigError, match="unknown launch engine"):
        runner("slurm")


def test_missing_extra_names_what_to_install() -> None:
    with pytest.raises(ConfigError) as info:
        require("ddla_no_such_engine_lib", engine="ray", extra="ray")
    assert "the ray launcher needs 'ddla_no_such_engine_lib'" in str(info.value)
    assert info.value.help == "pip install 'ddla[ray]'"


def test_spark_without_java_is_one_line(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("pyspark")
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(ConfigError, match="needs Java 17") as info:
        ddla.launch(  # launcher= counts before the overrides, so launch.master is valid here
            overrides=[
                "agents=2",
                "data.dataset=digits",
                "launch.master=local[2]",
                f"out={tmp_path / 'run'}",
            ],
            launcher="spark",
            progress=False,
        )
    assert "openjdk-17-jre-headless" in (info.value.help or "")
    assert not (tmp_path / "run" / "summary.json").exists()


def test_local_ranks_count_agents_per_host() -> None:
    assert local_ranks(["h1", "h1"]) == [(0, 2), (1, 2)]
    assert local_ranks(["h1", "h2", "h1", "h2"]) == [(0, 2), (0, 2), (1, 2), (1, 2)]


def test_launch_config_defaults_to_local() -> None:
    assert LaunchConfig().engine == "local" and RunConfig().launch.engine == "local"
