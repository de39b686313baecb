"""ddla merge: the fusion methods, the refusal of incompatible models, the ensemble file, and
``ddla eval`` through a saved preprocessing transform — on real digits models."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from ddla.cli import app
from ddla.commands.merge import merge
from ddla.data import load_dataset
from ddla.data.preprocess.transform import Transform
from ddla.errors import DataError
from ddla.models import ModelConfig, build_model, load_model, save_model
from ddla.models.fusion.ensemble import Ensemble
from ddla.tasks import get_task

runner = CliRunner()
CFG = ModelConfig(name="mlp", hidden=32)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _trained(ds, *, seed, steps=150, shuffle_labels=False, transform=None):
    """A real model: SGD on digits' training set (labels permuted for a deliberately bad one)."""
    torch.manual_seed(seed)
    model = build_model(CFG, input_shape=ds.input_shape, num_classes=10, seed=seed)
    x = ds.x_train if transform is None else transform(ds.x_train)
    y = ds.y_train[torch.randperm(len(ds.y_train))] if shuffle_labels else ds.y_train
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (32,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def _save_run(tmp_path, name, model, *, samples=100, transform=None, cfg=CFG):
    run = tmp_path / name
    run.mkdir()
    save_model(run / "model.safetensors", model, model_config=cfg, input_shape=(1, 8, 8),
               classes=tuple(str(i) for i in range(10)), dataset="digits",
               extra={"samples": samples}, preprocess=transform)  # fmt: skip
    return run


def test_merge_of_two_runs_is_the_exact_parameter_average(tmp_path, digits):
    a, b = _trained(digits, seed=1), _trained(digits, seed=2)
    runs = [_save_run(tmp_path, "a", a), _save_run(tmp_path, "b", b)]
    result = merge(runs, out=tmp_path / "merged", method="average")
    merged, meta = load_model(tmp_path / "merged" / "model.safetensors")
    for key, value in merged.state_dict().items():
        assert torch.equal(value, (a.state_dict()[key] + b.state_dict()[key]) / 2), key
    assert meta["merge"]["method"] == "average"
    assert [r["model"] for r in result["rows"]] == [str(runs[0] / "model"), str(runs[1] / "model"),
                                                    "merged (average)"]  # fmt: skip
    on_disk = json.loads((tmp_path / "merged" / "merge.json").read_text())
    assert on_disk["rows"] == result["rows"]


def test_weighted_merge_weights_by_training_samples(tmp_path, digits):
    a, b = _trained(digits, seed=1), _trained(digits, seed=2)
    runs = [_save_run(tmp_path, "a", a, samples=300), _save_run(tmp_path, "b", b, samples=100)]
    merge(runs, out=tmp_path / "m", method="weighted")
    merged, _ = load_model(tmp_path / "m" / "model.safetensors")
    w = merged.state_dict()
    for key in w:
        want = (0.75 * a.state_dict()[key].double() + 0.25 * b.state_dict()[key].double()).float()
        assert torch.equal(w[key], want), key


def test_incompatible_models_are_refused_naming_the_first_mismatching_tensor(tmp_path, digits):
    a = build_model(CFG, input_shape=(1, 8, 8), num_classes=10, seed=0)
    wide = ModelConfig(name="mlp", hidden=48)
    b = build_model(wide, input_shape=(1, 8, 8), num_classes=10, seed=0)
    runs = [_save_run(tmp_path, "a", a), _save_run(tmp_path, "b", b, cfg=wide)]
    first = next(iter(a.state_dict()))
    with pytest.raises(DataError, match=rf"tensor {first}: shape \(32, 64\) vs \(48, 64\)"):
        merge(runs, out=tmp_path / "m")
    res = runner.invoke(app, ["merge", *map(str, runs), "--out", str(tmp_path / "m")])
    assert res.exit_code != 0
    lines = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"tensor {first}: shape" in lines[0]
    assert "Traceback" not in res.output


def test_ensemble_predicts_the_mean_of_members_probabilities_and_ddla_eval_loads_it(
    tmp_path, digits
):
    members = [_trained(digits, seed=s) for s in (1, 2, 3)]
    runs = [_save_run(tmp_path, f"r{i}", m) for i, m in enumerate(members)]
    result = merge(runs, out=tmp_path / "ens", method="ensemble")
    loaded, meta = load_model(tmp_path / "ens" / "model.safetensors")
    assert isinstance(loaded, Ensemble) and meta["ensemble"] == {"members": 3}
    x = digits.x_test
    with torch.no_grad():
        mean = torch.stack([m(x).softmax(-1) for m in members]).mean(0)
        torch.testing.assert_close(loaded.eval()(x).exp(), mean)
    res = runner.invoke(app, ["eval", str(tmp_path / "ens" / "model.safetensors")],
                        env={"COLUMNS": "200"})  # fmt: skip
    assert res.exit_code == 0, res.output
    acc = get_task("classification").evaluate(loaded, x, digits.y_test, num_classes=10)["accuracy"]
    assert f"{acc:.2%}" in res.output
    assert (mean.argmax(-1) == digits.y_test).float().mean().item() == pytest.approx(acc)
    assert result["rows"][-1]["model"] == "merged (ensemble)"


def test_greedy_soup_adds_models_while_heldout_accuracy_does_not_fall(tmp_path, digits):
    good = [_trained(digits, seed=s, steps=300) for s in (1, 2)]
    bad = _trained(digits, seed=3, shuffle_labels=True)
    runs = [_save_run(tmp_path, "bad", bad)] + [
        _save_run(tmp_path, f"good{i}", m) for i, m in enumerate(good)
    ]
    result = merge(runs, out=tmp_path / "soup", method="greedy-soup", heldout=0.5)
    rows = {r["model"]: r for r in result["rows"]}
    inputs = result["models"]
    by_heldout = sorted(inputs, key=lambda n: -rows[n]["heldout_accuracy"])
    steps = result["soup_steps"]
    # Algorithm 1: candidates in order of held-out accuracy, starting from the best.
    assert [s["model"] for s in steps] == by_heldout
    best = steps[0]["heldout_accuracy"]
    for step in steps[1:]:
        assert step["kept"] == (step["heldout_accuracy"] >= best)
        best = max(best, step["heldout_accuracy"]) if step["kept"] else best
    assert result["chosen"] == [s["model"] for s in steps if s["kept"]]
    assert str(runs[0] / "model") not in result["chosen"]  # the shuffled-label model
    merged = rows["merged (greedy-soup)"]
    assert merged["heldout_accuracy"] >= rows[by_heldout[0]]["heldout_accuracy"]
    best_run = merge(runs, out=tmp_path / "best", method="best")
    assert best_run["chosen"] == [by_heldout[0]]


def test_ddla_eval_applies_the_saved_transform(tmp_path, digits):
    flat = digits.x_train.reshape(len(digits.x_train), -1).double()
    std = flat.std(0, unbiased=False)
    transform = Transform(kind="standardize", input_shape=(1, 8, 8), shift=flat.mean(0),
                          scale=torch.where(std > 0, 1 / std.clamp_min(1e-12), 1.0))  # fmt: skip
    model = _trained(digits, seed=1, transform=transform)
    run = _save_run(tmp_path, "std", model, transform=transform)
    res = runner.invoke(app, ["eval", str(run / "model.safetensors")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    task = get_task("classification")
    good = task.evaluate(model, transform(digits.x_test), digits.y_test, num_classes=10)
    raw = task.evaluate(model, digits.x_test, digits.y_test, num_classes=10)
    assert f"{good['loss']:.4f}" in res.output
    assert good["loss"] != pytest.approx(raw["loss"])  # without the transform it would differ
    assert (run / "model.preprocess.safetensors").is_file()
    assert Transform.load(run / "model.preprocess.safetensors").equal(transform)


def test_merge_refuses_models_with_different_transforms(tmp_path, digits):
    a, b = _trained(digits, seed=1), _trained(digits, seed=2)
    t = Transform(kind="minmax", input_shape=(1, 8, 8), shift=torch.zeros(64, dtype=torch.float64),
                  scale=torch.full((64,), 1 / 16, dtype=torch.float64))  # fmt: skip
    runs = [_save_run(tmp_path, "a", a, transform=t), _save_run(tmp_path, "b", b)]
    with pytest.raises(DataError, match="different preprocessing transforms"):
        merge(runs, out=tmp_path / "m")


def test_unknown_method_is_refused(tmp_path, digits):
    runs = [_save_run(tmp_path, n, _trained(digits, seed=1, steps=1)) for n in ("a", "b")]
    res = runner.invoke(app, ["merge", *map(str, runs), "--out", str(tmp_path / "m"),
                              "--method", "median"])  # fmt: skip
    assert res.exit_code != 0 and "unknown merge method 'median'" in res.output
