"""Zoo models: shapes per dataset, seeded init, export/load round trip, merge math."""

from __future__ import annotations

import pytest
import torch

from ddla.errors import DataError
from ddla.models import (
    ModelConfig,
    average_state_dicts,
    build_model,
    load_model,
    save_model,
)


@pytest.mark.parametrize(
    ("name", "shape"), [("mlp", (40,)), ("cnn", (40,)), ("mlp", (1, 28, 28)), ("cnn", (1, 8, 8))]
)
def test_models_fit_their_inputs(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(ModelConfig(name=name), input_shape=shape, num_classes=10)
    assert model(torch.zeros(3, *shape)).shape == (3, 10)


def test_same_seed_same_weights_other_seed_other() -> None:
    cfg = ModelConfig(name="mlp", hidden=16)
    a, b, c = (build_model(cfg, input_shape=(8,), num_classes=3, seed=s) for s in (1, 1, 2))
    wa, wb, wc = (m[1].weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_export_round_trip(tmp_path) -> None:
    cfg = ModelConfig(name="cnn", channels=4, hidden=8)
    model = build_model(cfg, input_shape=(40,), num_classes=10, seed=3)
    path = save_model(
        tmp_path / "model.safetensors",
        model,
        model_config=cfg,
        input_shape=(40,),
        classes=[str(i) for i in range(10)],
        dataset="mnist1d",
    )
    loaded, meta = load_model(path)
    x = torch.randn(5, 40)
    assert torch.equal(loaded(x), model(x))
    assert meta["dataset"] == "mnist1d" and meta["architecture"]["channels"] == 4


def test_load_rejects_missing_and_corrupt(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_model(tmp_path / "none.safetensors")
    cfg = ModelConfig(name="mlp", hidden=4)
    path = save_model(
        tmp_path / "m.safetensors",
        build_model(cfg, input_shape=(2,), num_classes=2),
        model_config=cfg,
        input_shape=(2,),
        classes=["a", "b"],
        dataset="x",
    )
    path.write_bytes(b"\x00garbage")
    with pytest.raises(DataError, match="not a valid safetensors"):
        load_model(path)


def test_weighted_average() -> None:
    a = {"w": torch.tensor([0.0, 4.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([2.0, 0.0]), "n": torch.tensor(9)}
    out = average_state_dicts([a, b], weights=[3, 1])
    torch.testing.assert_close(out["w"], torch.tensor([0.5, 3.0]))
    assert out["n"].item() == 3
