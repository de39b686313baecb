"""Round-trip error bounds and exact wire bytes of every compressor, on random tensors."""

from __future__ import annotations

import math

import pytest
import torch

from ddla.compress import (
    BF16,
    COMPRESSORS,
    FP16,
    Chain,
    ErrorFeedback,
    Identity,
    Int4,
    Int8,
    PowerSGD,
    TopK,
    build_compressor,
    pack,
    unpack,
)

SHAPES = [(1,), (7,), (129,), (1000,), (33, 17), (4, 3, 5, 5)]


def _rand(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # Heavy-tailed values spanning several orders of magnitude, as pseudo-gradients are.
    return torch.randn(shape, generator=gen) * torch.exp(2 * torch.randn(shape, generator=gen))


@pytest.mark.parametrize("shape", SHAPES)
def test_identity_is_exact(shape):
    x = _rand(shape)
    c = Identity()
    p = c.compress(x)
    assert torch.equal(c.decompress(p), x)
    assert p.nbytes == 4 * x.numel()


@pytest.mark.parametrize("shape", SHAPES)
def test_fp16_within_relative_bound(shape):
    x = _rand(shape).clamp(-60000, 60000)
    c = FP16()
    p = c.compress(x)
    err = (c.decompress(p) - x).abs()
    assert torch.all(err <= x.abs() * 2**-11 + 2**-25)
    assert p.nbytes == 2 * x.numel()


@pytest.mark.parametrize("shape", SHAPES)
def test_bf16_within_relative_bound(shape):
    x = _rand(shape)
    c = BF16()
    p = c.compress(x)
    err = (c.decompress(p) - x).abs()
    assert torch.all(err <= x.abs() * 2**-8)
    assert p.nbytes == 2 * x.numel()


@pytest.mark.parametrize("cls, levels", [(Int8, 127), (Int4, 7)])
@pytest.mark.parametrize("block", [2, 64, 128])
@pytest.mark.parametrize("shape", SHAPES)
def test_blockwise_within_half_step_of_block_absmax(cls, levels, block, shape):
    x = _rand(shape, seed=block)
    c = cls(block)
    p = c.compress(x)
    y = c.decompress(p)
    assert y.shape == x.shape and y.dtype == x.dtype
    flat = x.reshape(-1)
    n = flat.numel()
    padded = torch.zeros(math.ceil(n / block) * block)
    padded[:n] = flat
    absmax = padded.view(-1, block).abs().amax(1).repeat_interleave(block)[:n]
    bound = absmax / (2 * levels)
    err = (y - x).abs().reshape(-1)
    assert torch.all(err <= bound * (1 + 1e-5) + 1e-12)
    assert torch.allclose(c.error_bound(x).reshape(-1), bound, rtol=1e-6)
    code_bytes = n if cls is Int8 else math.ceil(n / 2)
    assert p.nbytes == code_bytes + 4 * math.ceil(n / block)


def test_int4_uses_all_fifteen_levels_and_packs_two_per_byte():
    x = torch.linspace(-7, 7, 15).repeat(2)[:29]  # odd length: last byte half used
    c = Int4(32)
    p = c.compress(x)
    assert p.tensors["codes"].numel() == 15
    assert torch.allclose(c.decompress(p), x, atol=1e-6)


def test_blockwise_zero_tensor_round_trips_to_zero():
    for c in (Int8(), Int4()):
        assert torch.equal(c.decompress(c.compress(torch.zeros(300))), torch.zeros(300))


@pytest.mark.parametrize("ratio", [0.001, 0.01, 0.3, 1.0])
@pytest.mark.parametrize("shape", SHAPES)
def test_topk_keeps_largest_exactly(ratio, shape):
    x = _rand(shape)
    c = TopK(ratio)
    p = c.compress(x)
    y = c.decompress(p)
    k = max(1, math.ceil(ratio * x.numel()))
    kept = y != 0
    assert int(kept.sum()) == k
    assert torch.equal(y[kept], x[kept])
    if k < x.numel():
        assert x[~kept].abs().max() <= x[kept].abs().min()
    assert p.nbytes == 8 * k


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_powersgd_projection_bound_and_exact_low_rank(rank):
    gen = torch.Generator().manual_seed(rank)
    m = torch.randn(60, 40, generator=gen)
    # One power iteration from a warm start Q0 must give the orthogonal projection of M onto
    # the span of M Q0: A (A^T A)^-1 A^T M with A = M Q0 (written out; no QR of ours).
    q0 = torch.randn(40, rank, generator=gen)
    c = PowerSGD(rank)
    c.load_state_dict({"w": q0})
    p = c.compress(m, key="w")
    y = c.decompress(p)
    a = m @ q0
    torch.testing.assert_close(y, a @ torch.linalg.solve(a.T @ a, a.T @ m), atol=1e-4, rtol=1e-4)
    # ... which can never beat the best rank-r approximation (Eckart-Young).
    s = torch.linalg.svdvals(m)
    assert (y - m).norm() >= s[rank:].norm() * (1 - 1e-5)
    assert torch.linalg.matrix_rank(y) == rank
    assert p.nbytes == 4 * rank * (60 + 40)
    low = torch.randn(60, rank, generator=gen) @ torch.randn(rank, 40, generator=gen)
    p = PowerSGD(rank).compress(low, key="w")
    torch.testing.assert_close(PowerSGD(rank).decompress(p), low, atol=1e-4, rtol=1e-4)


def test_powersgd_warm_start_improves_a_fixed_matrix():
    gen = torch.Generator().manual_seed(3)
    m = torch.randn(50, 30, generator=gen) @ torch.diag(3 * 0.6 ** torch.arange(30.0))
    c = PowerSGD(2)
    errors = [(c.decompress(c.compress(m, key="w")) - m).norm().item() for _ in range(10)]
    assert errors[-1] < errors[0]
    # Warm starts converge to the best rank-2 approximation (Eckart-Young).
    s = torch.linalg.svdvals(m)
    assert errors[-1] == pytest.approx(s[2:].norm().item(), rel=1e-3)


def test_powersgd_vectors_and_tiny_tensors():
    c = PowerSGD(1)
    for shape in [(10,), (10000,), (2, 2)]:  # vectors and a matrix rank-1 cannot shrink
        x = _rand(shape)
        p = c.compress(x, key="b")
        assert torch.equal(c.decompress(p), x) and p.nbytes == 4 * x.numel()
    conv = _rand((8, 3, 3, 3))  # viewed as 8 x 27
    p = c.compress(conv, key="c")
    assert p.nbytes == 4 * (8 + 27)
    assert c.decompress(p).shape == conv.shape


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("topk:0.5+int8", 128 + 4 + 4 * 128),
        ("topk:0.5+int4", 64 + 4 + 4 * 128),
        ("topk:0.5+fp16", 2 * 128 + 4 * 128),
        ("powersgd:2+int8", (32 * 2 + 4) + (8 * 2 + 4)),
        ("int8+fp16", 256 + 2 * 2),
    ],
)
def test_chain_bytes_and_error(spec, expected):
    x = _rand((32, 8))
    c = build_compressor(spec)
    p = c.compress(x, key="x")
    assert p.nbytes == expected
    assert pack([p]).numel() == expected
    y = c.decompress(p)
    assert y.shape == x.shape
    # A value stage after the first adds at most its own rounding to what it re-encodes: the
    # first stage's output values (top-k), its factors (PowerSGD) or its scales (int8).
    first_spec, second = spec.split("+")
    first = build_compressor(first_spec)
    p_first = first.compress(x, key="x")
    y_first = first.decompress(p_first)
    added = (y - y_first).abs()
    half_step = {"int8": 1 / 254, "int4": 1 / 14}  # of the block's absmax (one block here)
    if second == "fp16":  # relative rounding of each re-encoded value (or scale)
        assert torch.all(added <= y_first.abs() * 2**-11 + 1e-12)
    elif first_spec.startswith("topk"):
        assert added.max() <= y_first.abs().max() * half_step[second] * (1 + 1e-5) + 1e-12
    else:  # P Q^T with P, Q each rounded by at most half a step of their absmax
        pm, qm = (p_first.tensors[k].abs().max() for k in ("p", "q"))
        e = half_step[second]
        assert added.max() <= 2 * pm * qm * (2 * e + e * e) * (1 + 1e-5)
    assert added.max() > 0  # the second stage did re-encode something


def test_pack_unpack_round_trip_every_compressor():
    specs = ["none", "fp16", "bf16", "int8", "int4:64", "topk:0.1", "powersgd:2", "topk:0.1+int4"]
    tensors = [_rand((30, 20), 1), _rand((20,), 2), _rand((3, 4, 5), 3)]
    for spec in specs:
        c = build_compressor(spec)
        payloads = [c.compress(t, key=str(i)) for i, t in enumerate(tensors)]
        buffer = pack(payloads)
        assert buffer.dtype == torch.uint8
        assert buffer.numel() == sum(p.nbytes for p in payloads)
        back = unpack(buffer.clone(), payloads)
        for a, b in zip(payloads, back, strict=True):
            assert torch.equal(c.decompress(a), c.decompress(b))
        with pytest.raises(ValueError, match="layout"):
            unpack(torch.cat([buffer, torch.zeros(1, dtype=torch.uint8)]), payloads)


def test_registry_names_all_build():
    for name, cls in COMPRESSORS.items():
        arg = {"topk": ":0.1", "powersgd": ":2"}.get(name, "")
        c = build_compressor(name + arg)
        inner = c.inner if isinstance(c, ErrorFeedback) else c
        assert isinstance(inner, cls)
        assert build_compressor(c.spec).spec == c.spec
    assert isinstance(build_compressor("topk:0.1+int8"), ErrorFeedback)
    assert isinstance(build_compressor("topk:0.1+int8").inner, Chain)
    assert not isinstance(build_compressor("int8"), ErrorFeedback)


@pytest.mark.parametrize("spec", ["int8", "int4", "int4:64"])
def test_blockwise_payload_nbytes_is_exact(spec):
    c = build_compressor(spec)
    for n in (1, 7, 63, 64, 128, 129, 1000):
        assert c.payload_nbytes(n) == c.compress(torch.randn(n)).nbytes, (spec, n)
    assert build_compressor("topk:0.1").payload_nbytes(100) is None  # not fixed-rate


def test_reduce_scatter_only_when_it_sends_fewer_bytes():
    from ddla.aggregate.wire import _scatter_sends_less

    int8 = build_compressor("int8")
    big = [torch.zeros(300, 200), torch.zeros(200)]
    assert _scatter_sends_less(int8, big, 4, 128)  # 2*3/4 against 3 payloads
    assert not _scatter_sends_less(int8, big, 2, 128)  # 1 against 1, plus padding
    assert not _scatter_sends_less(int8, [torch.zeros(10)], 4, 128)  # 4 padded blocks vs 1
