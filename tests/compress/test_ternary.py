"""``ternary[:BLOCK]``: TWN threshold and scale, five codes per byte, error feedback, refusals."""

from __future__ import annotations

import math

import pytest
import torch

from ddla.compress import ErrorFeedback, build_compressor
from ddla.compress.ternary import Ternary
from ddla.errors import ConfigError


def _rand(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [1, 4, 5, 16, 99, 1000])
def test_values_above_the_threshold_keep_their_sign_at_the_mean_kept_magnitude(n):
    x = _rand(n, n)
    x[::7] = 0.0  # exact zeros stay exact zeros
    c = Ternary(16)
    got = c.decompress(c.compress(x))
    for start in range(0, n, 16):
        block = x[start : start + 16]
        kept = block.abs() > 0.7 * block.abs().mean()
        scale = block.abs()[kept].mean() if kept.any() else torch.tensor(0.0)
        want = torch.sign(block) * kept * scale
        torch.testing.assert_close(got[start : start + 16], want)
    assert (got[::7] == 0).all()


@pytest.mark.parametrize("spec", ["ternary", "ternary:64"])
def test_bytes_are_five_codes_per_byte_and_a_float_per_block(spec):
    c = build_compressor(spec)
    block = 1024 if spec == "ternary" else 64
    for n in (1, 4, 5, 6, 63, 64, 129, 1000, 5001):
        nbytes = c.compress(torch.randn(n), key=str(n)).nbytes
        assert nbytes == math.ceil(n / 5) + 4 * math.ceil(n / block) == c.payload_nbytes(n)


def test_every_base_three_code_round_trips():
    c = Ternary(2)  # blocks of 2: every pattern of signs and zeros appears in 3^5 groups
    pattern = torch.tensor([[a, b, d, e, f] for a in (-1, 0, 1) for b in (-1, 0, 1)
                            for d in (-1, 0, 1) for e in (-1, 0, 1) for f in (-1, 0, 1)],
                           dtype=torch.float32).view(-1)  # fmt: skip
    got = c.decompress(c.compress(pattern))
    assert torch.equal(torch.sign(got), pattern)


def test_the_spec_builds_error_feedback_and_sends_the_rest_later():
    c = build_compressor("ternary:32")
    assert isinstance(c, ErrorFeedback) and isinstance(c.inner, Ternary)
    assert c.requantize_block == 32 and build_compressor(c.spec).spec == "ternary:32"
    sent, given = torch.zeros(256), torch.zeros(256)
    for step in range(100):
        x = _rand(256, step) * 0.1 + 0.02
        given += x
        sent += c.decompress(c.compress(x, key="g"))
    torch.testing.assert_close(given - sent, c.residuals["g"], rtol=0, atol=1e-4)
    assert ((given - sent) / 100).abs().max() < 0.01


@pytest.mark.parametrize(("spec", "match"), [("ternary:1", ">= 2"), ("ternary:x", "cannot read")])
def test_bad_blocks_are_refused(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_compressor(spec)
