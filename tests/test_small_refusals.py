"""Small inputs that used to slip through or fail with the wrong words (issue 10, 12-15)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

import ddla
from ddla.cli import app
from ddla.data import DATASETS, PARTITIONERS, load_dataset, partition, partition_table
from ddla.errors import ConfigError, DataError
from ddla.models.zoo import MODELS
from ddla.sync import STRATEGIES


def test_shards_with_more_classes_per_agent_than_the_data_has_is_refused() -> None:
    # Item 12: shards:11 on 10 classes was accepted (agents got 7-8 classes).
    labels = np.repeat(np.arange(10), 50)
    with pytest.raises(ConfigError, match="shards:11 gives each agent 11 classes") as info:
        partition("shards:11", labels, 4, 0)
    assert "K <= 10" in info.value.help
    parts = partition("shards:10", labels, 4, 0)
    assert all(len(set(labels[p])) <= 10 for p in parts)


def test_a_file_that_is_not_an_npz_says_so(tmp_path: Path) -> None:
    # Item 13: a non-zip file was reported as "holds object arrays".
    path = tmp_path / "notes.npz"
    path.write_text("hello, I am text")
    with pytest.raises(DataError, match=r"not an \.npz file") as info:
        load_dataset(f"npz:{path}")
    assert "object arrays" not in str(info.value)


@pytest.mark.filterwarnings("error")
def test_a_model_that_cannot_take_the_inputs_is_refused_up_front(tmp_path: Path, capfd) -> None:
    # Item 14: --model cnn on tiny 3-D inputs gave a raw torch error plus warnings.
    path = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(40, 1, 2, 2)), y=np.arange(40) % 2)
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"model cnn cannot take .* inputs of shape \(1, 2, 2\)"):
        ddla.launch(overrides=[f"data.dataset=npz:{path}", "model.name=cnn", f"out={out}"])
    assert "Warning" not in capfd.readouterr().err

    assert not out.exists()


def test_run_help_lists_every_choice() -> None:
    # Item 15: the strategies were missing from `ddla run --help`.
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    text = re.sub(r"[\s│]+", " ", result.output)
    for name in [*STRATEGIES, *MODELS, *DATASETS, *PARTITIONERS]:
        assert name in text, name
    assert "--epochs" in text and "--force" in text


def test_partition_table_fits_80_columns_without_truncated_headers() -> None:
    # Item 15: at 80 columns every header and count was cut to "1…".
    ds = load_dataset("digits")
    labels = ds.y_train.numpy()
    names = tuple(f"class-name-{c}" for c in ds.classes)
    console = Console(width=80, record=True)
    console.print(partition_table(partition("iid", labels, 4, 0), labels, names))
    text = console.export_text()
    assert "…" not in text
    assert "0=class-name-0" in text and "9=class-name-9" in text
    assert all(len(line) <= 80 for line in text.splitlines())
