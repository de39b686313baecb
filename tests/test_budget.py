"""Training budgets and defaults that reach known-good accuracy (issue 10, Defaults)."""

from __future__ import annotations

import math

import pytest

from ddla.budget import DEFAULT_EPOCHS, DEFAULT_STEPS, resolve_budget
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.optim import lr_factor
from ddla.sync.config import DEFAULT_EVERY


def _budget(overrides: list[str], *, train_size=60_000, agents=4, dataset="fashion-mnist"):
    cfg = RunConfig.load(None, [f"data.dataset={dataset}", *overrides])
    return resolve_budget(
        cfg.train,
        dataset=cfg.data.dataset,
        model=cfg.model.name,
        train_size=train_size,
        agents=agents,
        batch_size=cfg.data.batch_size,
    )


def test_fashion_mnist_mlp_gets_its_default_epochs_not_600_steps() -> None:
    b = _budget([])
    assert b.epochs == DEFAULT_EPOCHS[("fashion-mnist", "mlp")]
    assert b.steps == round(b.epochs * math.ceil(60_000 / (4 * 32)))
    assert b.source == "default for fashion-mnist with mlp"


def test_an_epoch_is_the_whole_training_set_whatever_the_agent_count() -> None:
    one, four = _budget(["train.epochs=2"], agents=1), _budget(["train.epochs=2"], agents=4)
    assert one.steps * 1 * 32 == pytest.approx(four.steps * 4 * 32, rel=1e-3)
    assert one.source == "train.epochs"


def test_explicit_steps_win_and_both_at_once_is_refused() -> None:
    assert _budget(["train.steps=10"]).steps == 10
    with pytest.raises(ConfigError, match=r"train\.steps and train\.epochs are both set"):
        RunConfig.load(None, ["train.steps=10", "train.epochs=1"])
    with pytest.raises(ConfigError, match=r"train\.epochs must be > 0"):
        RunConfig.load(None, ["train.epochs=0"])


def test_the_default_job_keeps_600_steps() -> None:
    # `make run` (4 agents, mnist1d, mlp) stays about a minute.
    b = _budget([], dataset="mnist1d", train_size=4000)
    assert b.steps == DEFAULT_STEPS == 600 and b.source == "default"


@pytest.mark.parametrize("strategy", ["local_sgd", "diloco", "streaming_diloco"])
def test_periodic_strategies_default_to_a_useful_period(strategy: str) -> None:
    # They defaulted to sync.every=1: a synchronization every step, defeating their purpose.
    cfg = RunConfig.load(None, [f"sync.strategy={strategy}"])
    assert cfg.sync.every == DEFAULT_EVERY[strategy] >= 20
    assert RunConfig.load(None, [f"sync.strategy={strategy}", "sync.every=7"]).sync.every == 7


def test_cosine_schedule_ends_near_zero_and_is_the_default() -> None:
    assert RunConfig.load(None, []).optim.schedule == "cosine"
    assert lr_factor("cosine", 0, 100) == 1.0
    assert lr_factor("cosine", 99, 100) < 0.001
    with pytest.raises(ConfigError, match=r"optim\.schedule"):
        RunConfig.load(None, ["optim.schedule=linear"])


def test_summary_table_prints_the_budget() -> None:
    from rich.console import Console

    from ddla.cli import summary_table

    summary = {
        "strategy": "allreduce",
        "agents": 4,
        "dataset": "fashion-mnist",
        "final": {"accuracy": 0.88, "precision": 0.88, "recall": 0.88, "f1": 0.88, "loss": 0.3},
        "comm": {"bytes_sent": 1, "bytes_received": 1},
        "time": {"wall_s": 1.0, "compute_s": 1.0, "comm_s": 0.0},
        "steps": 2813,
        "budget": {"steps": 2813, "epochs": 6.0, "source": "default for fashion-mnist with mlp"},
        "model_path": "m.safetensors",
    }
    console = Console(width=200, record=True)
    console.print(summary_table(summary))
    assert "2813 steps, 6 epochs (default for fashion-mnist with mlp)" in console.export_text()
