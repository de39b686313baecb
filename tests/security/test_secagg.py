import pytest
import torch

from ddla.errors import SecurityError
from ddla.security.secagg import (
    FRAC_BITS,
    SecureAggregator,
    decode,
    encode,
    mask,
    pair_mask,
)


def test_fixed_point_roundtrip_and_negative_values():
    x = torch.tensor([0.0, 1.5, -2.25, 1e-3, -123456.75])
    torch.testing.assert_close(decode(encode(x)), x.double(), atol=2.0 ** -(FRAC_BITS + 1), rtol=0)


def test_out_of_range_and_nonfinite_are_refused():
    with pytest.raises(SecurityError, match="fixed-point range"):
        encode(torch.tensor([1e9]))
    with pytest.raises(SecurityError, match="cannot encode inf/NaN"):
        encode(torch.tensor([float("nan")]))
    with pytest.raises(SecurityError, match="cannot encode inf/NaN"):
        encode(torch.tensor([1.0, float("inf")]))


def test_masks_are_deterministic_per_seed_and_round():
    a = pair_mask(b"k" * 32, round=0, numel=1000)
    assert torch.equal(a, pair_mask(b"k" * 32, round=0, numel=1000))
    assert not torch.equal(a, pair_mask(b"k" * 32, round=1, numel=1000))
    assert a.min() >= 0 and a.max() < 2**52
    # Roughly uniform over the ring: mean near M/2.
    assert abs(a.double().mean().item() / 2**51 - 1) < 0.1


def test_masked_sum_is_exact_and_contributions_look_random(sessions):
    world = 4
    aggs = [SecureAggregator(s) for s in sessions(world)]
    torch.manual_seed(0)
    xs = [torch.randn(5000) for _ in range(world)]
    masked = [agg.masked(x, round=7) for agg, x in zip(aggs, xs, strict=True)]
    plain = [encode(x) for x in xs]
    for m, p in zip(masked, plain, strict=True):
        assert not torch.equal(m, p)
        # The masked contribution is uncorrelated with the input (it looks uniform).
        corr = torch.corrcoef(torch.stack([m.double(), p.double()]))[0, 1].item()
        assert abs(corr) < 0.05
    total = torch.stack(masked).sum(0)
    # Exact in fixed point: the masked sum equals the sum of the encodings bit for bit.
    assert torch.equal(total % 2**52, torch.stack(plain).sum(0) % 2**52)
    torch.testing.assert_close(
        aggs[0].decode(total), torch.stack(xs).double().sum(0), atol=world * 2.0**-25, rtol=0
    )


def test_dropout_mid_round_survivors_remove_its_masks(sessions):
    aggs = [SecureAggregator(s) for s in sessions(4)]
    xs = [torch.full((100,), float(r + 1)) for r in range(4)]
    masked = [agg.masked(x, round=3) for agg, x in zip(aggs, xs, strict=True)]
    # Agent 2 drops after everybody masked: the survivors' sum alone does not decode ...
    survivors = [0, 1, 3]
    broken = aggs[0].decode(torch.stack([masked[r] for r in survivors]).sum(0))
    assert not torch.allclose(broken, torch.full((100,), 7.0, dtype=torch.float64))
    # ... until each survivor removes its masks with agent 2.
    fixed = [aggs[r].remove_dropped(masked[r], round=3, dropped=[2]) for r in survivors]
    total = aggs[0].decode(torch.stack(fixed).sum(0))
    assert torch.equal(total, torch.full((100,), 7.0, dtype=torch.float64))


def test_mask_signs_cancel_for_a_pair():
    seeds = {1: b"p" * 32}
    a = mask(torch.zeros(10, dtype=torch.int64), rank=0, seeds=seeds, round=0)
    b = mask(torch.zeros(10, dtype=torch.int64), rank=1, seeds={0: b"p" * 32}, round=0)
    assert torch.equal((a + b) % 2**52, torch.zeros(10, dtype=torch.int64))
