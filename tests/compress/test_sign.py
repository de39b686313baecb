"""``sign[:BLOCK]``: bits, scales and bytes, error feedback, and the spec's refusals."""

from __future__ import annotations

import math

import pytest
import torch

from ddla.compress import ErrorFeedback, build_compressor
from ddla.compress.sign import Sign
from ddla.errors import ConfigError


def _rand(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [1, 7, 8, 64, 100, 1000])
def test_each_value_decodes_to_its_sign_times_its_blocks_mean_magnitude(n):
    x = _rand(n, n)
    c = Sign(16)
    got = c.decompress(c.compress(x))
    for start in range(0, n, 16):
        block = x[start : start + 16]  # the last block's mean is over its real values only
        want = torch.where(block >= 0, 1.0, -1.0) * block.abs().mean()
        torch.testing.assert_close(got[start : start + 16], want)


@pytest.mark.parametrize("spec", ["sign", "sign:64"])
def test_bytes_are_one_bit_per_value_and_a_float_per_block(spec):
    c = build_compressor(spec)
    block = 1024 if spec == "sign" else 64
    for n in (1, 7, 63, 64, 129, 1000, 5000):
        nbytes = c.compress(torch.randn(n), key=str(n)).nbytes
        assert nbytes == math.ceil(n / 8) + 4 * math.ceil(n / block) == c.payload_nbytes(n)


def test_the_spec_builds_error_feedback_on_the_reduce_scatter_path():
    c = build_compressor("sign:64")
    assert isinstance(c, ErrorFeedback) and isinstance(c.inner, Sign)
    assert c.spec == "sign:64" and build_compressor("sign").spec == "sign"
    assert c.requantize_block == 64  # the wire keeps the scatter scheme (with keys)
    assert build_compressor("topk:0.1").requantize_block is None  # unchanged for the others


def test_error_feedback_sends_the_sum_of_the_inputs_minus_one_residual():
    c = build_compressor("sign:32")
    sent, given = torch.zeros(256), torch.zeros(256)
    for step in range(100):
        x = _rand(256, step) + 0.3  # a bias that one-bit codes alone would distort
        given += x
        sent += c.decompress(c.compress(x, key="g"))
    torch.testing.assert_close(given - sent, c.residuals["g"], rtol=0, atol=1e-4)
    # the residual stays bounded (a few block magnitudes), so the mean sent converges
    assert c.residuals["g"].abs().max() < 10
    assert ((given - sent) / 100).abs().max() < 0.1


def test_shapes_and_dtypes_round_trip():
    c = Sign(8)
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    y = c.decompress(c.compress(x))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(torch.sign(y), torch.where(x >= 0, 1.0, -1.0).double())


@pytest.mark.parametrize(("spec", "match"), [("sign:12", "multiple of 8"), ("sign:0", "multiple"),
                                             ("sign:x", "cannot read")])  # fmt: skip
def test_bad_blocks_are_refused(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_compressor(spec)


def test_secure_aggregation_refuses_sign():
    from ddla.aggregate import refuse_unmaskable

    with pytest.raises(ConfigError, match=r"cannot mask sync\.compress=sign"):
        refuse_unmaskable("sign")
