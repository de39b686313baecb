"""gpt: shapes, causality, tied weights, training on a tiny corpus, export; LM meters against
an independent computation."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from ddla.data.loaders.text import build_text_dataset
from ddla.errors import ConfigError
from ddla.metrics.lm import evaluate_lm, lm_cross_entropy
from ddla.models import ModelConfig, build_model, load_model, save_model

CFG = ModelConfig(name="gpt", hidden=32, layers=2, heads=4)
CONTEXT = 16


def _model(seed: int = 0) -> torch.nn.Module:
    return build_model(CFG, input_shape=(CONTEXT,), num_classes=256, seed=seed)


def test_forward_backward_shapes() -> None:
    model = _model()
    x = torch.randint(0, 256, (3, CONTEXT))
    logits = model(x)
    assert logits.shape == (3, CONTEXT, 256)
    assert model(x[:, :5]).shape == (3, 5, 256)  # shorter than the context is fine
    lm_cross_entropy(logits, torch.randint(0, 256, (3, CONTEXT))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_attention_is_causal() -> None:
    model = _model().eval()
    x = torch.randint(0, 256, (2, CONTEXT))
    y = x.clone()
    y[:, 10] = (y[:, 10] + 1) % 256
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :10], b[:, :10])  # earlier positions cannot see position 10
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_output_projection_is_the_token_embedding() -> None:
    model = _model()
    names = [n for n, _ in model.named_parameters()]
    assert "wte.weight" in names and not any("head" in n for n in names)
    w, d = 32, 256
    block = 4 * w + (3 * w * w + 3 * w) + (w * w + w) + (4 * w * w + 4 * w) + (4 * w * w + w)
    expected = d * w + CONTEXT * w + 2 * block + 2 * w  # the tied matrix counted once
    assert sum(p.numel() for p in model.parameters()) == expected
    with torch.no_grad():
        model.wte.weight.zero_()
    assert model(torch.zeros(1, 4, dtype=torch.long)).abs().max() == 0  # logits go through wte


def test_seeded_init_and_config_errors() -> None:
    assert torch.equal(_model(1).wte.weight, _model(1).wte.weight)
    assert not torch.equal(_model(1).wte.weight, _model(2).wte.weight)
    with pytest.raises(ConfigError, match=r"multiple of model\.heads"):
        build_model(ModelConfig(name="gpt", hidden=30, heads=4), input_shape=(8,), num_classes=256)
    with pytest.raises(ConfigError, match="token windows"):
        build_model(CFG, input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ValueError, match="context is 16 tokens"):
        _model()(torch.zeros(1, CONTEXT + 1, dtype=torch.long))


@pytest.fixture
def one_thread():
    """Tiny matmuls on shared cores: one thread is ~50x faster than two contending ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_learns_a_tiny_corpus(one_thread) -> None:
    text = b"the quick brown fox jumps over the lazy dog. " * 40
    ds = build_text_dataset("tiny", [("fox", text)], context=CONTEXT)
    model = _model()
    before = evaluate_lm(model, ds.x_test, ds.y_test, num_classes=256)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(60):
        idx = torch.arange(step * 8, step * 8 + 8) % len(ds.x_train)
        opt.zero_grad()
        lm_cross_entropy(model(ds.x_train[idx]), ds.y_train[idx]).backward()
        opt.step()
    after = evaluate_lm(model, ds.x_test, ds.y_test, num_classes=256)
    assert before["loss"] > math.log(256) - 1.0  # starts near uniform over bytes
    assert after["loss"] < 1.5 and after["accuracy"] > 0.5  # a 45-byte cycle is learnable


def test_export_round_trip_with_tied_weights(tmp_path) -> None:
    model = _model(3)
    path = save_model(
        tmp_path / "model.safetensors",
        model,
        model_config=CFG,
        input_shape=(CONTEXT,),
        classes=[str(i) for i in range(256)],
        dataset="python-stdlib",
        extra={"task": "lm"},
    )
    loaded, meta = load_model(path)
    x = torch.randint(0, 256, (2, CONTEXT))
    assert torch.equal(loaded.eval()(x), model.eval()(x)) and meta["task"] == "lm"


def test_lm_meters_match_an_independent_computation() -> None:
    model = _model().eval()
    x, y = torch.randint(0, 256, (7, CONTEXT)), torch.randint(0, 256, (7, CONTEXT))
    m = evaluate_lm(model, x, y, num_classes=256, batch_size=3)  # uneven batches
    with torch.no_grad():
        logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, 256), y.reshape(-1)).item()
    acc = (logits.argmax(-1) == y).float().mean().item()
    assert m["loss"] == pytest.approx(loss, rel=1e-5)
    assert m["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
    assert m["accuracy"] == pytest.approx(acc, abs=1e-6)
