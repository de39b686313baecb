"""Error feedback carries exactly what was not sent; compressor state survives checkpoints."""

from __future__ import annotations

import pytest
import torch

from ddla.compress import build_compressor


@pytest.mark.parametrize("spec", ["topk:0.05", "powersgd:1", "topk:0.1+int8", "powersgd:2+int4"])
def test_residual_is_input_minus_decoded_and_nothing_is_lost(spec):
    gen = torch.Generator().manual_seed(0)
    c = build_compressor(spec)
    total_in = torch.zeros(40, 30)
    total_out = torch.zeros(40, 30)
    residual = torch.zeros(40, 30)
    for _ in range(20):
        x = torch.randn(40, 30, generator=gen)
        y = c.decompress(c.compress(x, key="g"))
        torch.testing.assert_close(c.residuals["g"], residual + x - y, atol=1e-5, rtol=1e-5)
        residual = c.residuals["g"]
        total_in += x
        total_out += y
    # Telescoping: everything given was either sent or is still in the residual.
    torch.testing.assert_close(total_out + c.residuals["g"], total_in, atol=1e-4, rtol=1e-4)


def test_dropped_values_are_sent_later():
    c = build_compressor("topk:0.25")
    x = torch.tensor([8.0, 4.0, 2.0, 1.0])
    sent = [c.decompress(c.compress(x if i == 0 else torch.zeros(4), key="g")) for i in range(4)]
    assert [s.nonzero().item() for s in sent] == [0, 1, 2, 3]
    torch.testing.assert_close(sum(sent), x)
    assert torch.equal(c.residuals["g"], torch.zeros(4))


def test_keys_keep_separate_residuals():
    c = build_compressor("topk:0.5")
    c.compress(torch.tensor([2.0, 1.0]), key="a")
    c.compress(torch.tensor([0.0, 3.0, 1.0, 0.5]), key="b")
    assert c.residuals["a"].tolist() == [0.0, 1.0]
    assert c.residuals["b"].tolist() == [0.0, 0.0, 0.0, 0.5]


@pytest.mark.parametrize("spec", ["topk:0.1", "powersgd:2", "powersgd:1+int8"])
def test_state_dict_restores_residuals_and_warm_starts(spec):
    gen = torch.Generator().manual_seed(1)
    xs = [torch.randn(20, 10, generator=gen) for _ in range(3)]
    a = build_compressor(spec)
    for x in xs[:2]:
        a.compress(x, key="w")
    b = build_compressor(spec)
    b.load_state_dict(a.state_dict())
    pa, pb = a.compress(xs[2], key="w"), b.compress(xs[2], key="w")
    assert torch.equal(a.decompress(pa), b.decompress(pb))
    assert torch.equal(a.residuals["w"], b.residuals["w"])
