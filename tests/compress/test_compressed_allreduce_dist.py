"""The compressed all-reduce over real gloo agents: correct mean, identical everywhere, exact
bytes (ring model: all-gather sends (N-1) payloads, all-reduce 2(N-1)B/N, the int8/int4
reduce-scatter + all-gather 2(N-1) chunk payloads)."""

from __future__ import annotations

import math

import pytest
import torch

from ddla.aggregate import compressed_mean
from ddla.comm import Transport
from ddla.compress import build_compressor
from ddla.testing import run_agents

SPECS = ["none", "fp16", "bf16", "int8", "int4:64", "topk:0.1", "powersgd:2", "topk:0.2+int8"]
GATHER = "int8/gather"  # int8 with scatter=False: the all-gather of whole payloads
SHAPES = [(40, 30), (30,), (5, 3, 3)]


def _inputs(rank: int, call: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 * rank + call)
    return [torch.randn(s, generator=gen) for s in SHAPES]


def _agent(transport: Transport) -> dict[str, object]:
    out: dict[str, object] = {}
    for spec in [*SPECS, GATHER]:
        compressor = build_compressor(spec.split("/")[0])
        results, sent = [], []
        for call in range(2):  # a second call exercises error feedback and warm starts
            before = transport.stats.totals("train")["bytes_sent"]
            xs = _inputs(transport.rank, call)
            results.append(compressed_mean(transport, xs, compressor, scatter=spec != GATHER))
            sent.append(transport.stats.totals("train")["bytes_sent"] - before)
        out[spec] = (results, sent)
    return out


def _flat(rank: int, call: int) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in _inputs(rank, call)])


def _unflat(flat: torch.Tensor) -> list[torch.Tensor]:
    sizes = [math.prod(s) for s in SHAPES]
    return [t.view(s) for t, s in zip(flat.split(sizes), SHAPES, strict=True)]


def _replay_requantized(spec: str, world: int, call: int) -> tuple[list[torch.Tensor], int]:
    """The reduce-scatter + all-gather scheme replayed on block-aligned chunks in one process."""
    c = build_compressor(spec)
    n, block = _flat(0, call).numel(), c.requantize_block
    chunk = math.ceil(n / (world * block)) * block
    padded = [torch.nn.functional.pad(_flat(r, call), (0, world * chunk - n)) for r in range(world)]
    means = []
    for j in range(world):
        mine = [p[j * chunk : (j + 1) * chunk] for p in padded]
        total = sum(c.decompress(c.compress(x)) for x in mine)
        means.append(c.decompress(c.compress(total / world)))
    chunk_bytes = c.compress(torch.zeros(chunk)).nbytes
    # all_to_all: W - 1 chunks out; all_gather: the mean chunk to W - 1 agents
    return _unflat(torch.cat(means)[:n]), 2 * (world - 1) * chunk_bytes


def _expected(spec: str, world: int) -> tuple[list[list[torch.Tensor]], list[int]]:
    """Each agent's compressor replayed in this process, decoded and averaged in rank order."""
    compressors = [build_compressor(spec.split("/")[0]) for _ in range(world)]
    means, sent = [], []
    for call in range(2):
        if spec != GATHER and compressors[0].requantize_block is not None:
            mean, nbytes = _replay_requantized(spec, world, call)
            means.append(mean)
            sent.append(nbytes)
            continue
        if compressors[0].summable:
            decoded = [
                [c.decompress(c.compress(t / world)) for t in _inputs(r, call)]
                for r, c in enumerate(compressors)
            ]
            payload = sum(c.compress(t).nbytes for t in _inputs(0, call) for c in compressors[:1])
            sent.append(2 * (world - 1) * payload // world)
            means.append([sum(d[i] for d in decoded) for i in range(len(SHAPES))])
            continue
        payloads = [
            [c.compress(t, key=str(i)) for i, t in enumerate(_inputs(r, call))]
            for r, c in enumerate(compressors)
        ]
        decoded = [
            [c.decompress(p) for p in ps] for c, ps in zip(compressors, payloads, strict=True)
        ]
        sent.append((world - 1) * sum(p.nbytes for p in payloads[0]))
        means.append([sum(d[i] for d in decoded) / world for i in range(len(SHAPES))])
    return means, sent


@pytest.mark.dist
def test_compressed_all_reduce_three_agents(three_agents):
    world = 3
    results = three_agents
    for spec in [*SPECS, GATHER]:
        expected, expected_sent = _expected(spec, world)
        for rank in range(world):
            got, sent = results[rank][spec]
            assert sent == expected_sent, spec
            for call in range(2):
                for a, b, first in zip(
                    got[call], expected[call], results[0][spec][0][call], strict=True
                ):
                    assert torch.equal(a, first), f"{spec}: agents disagree"
                    # gloo sums fp16/bf16 partial sums in that dtype: allow its rounding.
                    tol = {"bf16": 2e-2, "fp16": 3e-3}.get(spec, 1e-5)
                    torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=spec)
        # int8/int4: within two half-steps (the chunk and its mean rounded) of the true mean
        if spec in ("int8", "int4:64"):
            levels, block = (127, 128) if spec == "int8" else (7, 64)
            for call in range(2):
                true = sum(_flat(r, call) for r in range(world)) / world
                got = torch.cat([t.reshape(-1) for t in results[0][spec][0][call]])
                n_pad = math.ceil(true.numel() / block) * block - true.numel()
                absmax = torch.stack(
                    [
                        torch.nn.functional.pad(_flat(r, call).abs(), (0, n_pad))
                        .view(-1, block)
                        .amax(1)
                        for r in range(world)
                    ]
                ).amax(0)
                bound = (absmax / levels).repeat_interleave(block)[: true.numel()]
                assert ((got - true).abs() <= bound + 1e-6).all(), spec
                assert not torch.equal(got, true), f"{spec}: nothing was rounded?"
        # fp32 'none' is the exact mean
        if spec == "none":
            for call in range(2):
                true = [sum(_inputs(r, call)[i] for r in range(world)) / world for i in range(3)]
                for a, b in zip(results[0][spec][0][call], true, strict=True):
                    torch.testing.assert_close(a, b)


def test_one_agent_sends_nothing_and_returns_inputs():
    with Transport.single() as transport:
        for spec in SPECS:
            xs = _inputs(0, 0)
            out = compressed_mean(transport, xs, build_compressor(spec))
            for a, b in zip(out, xs, strict=True):
                assert torch.equal(a, b)
        assert transport.stats.totals()["bytes_sent"] == 0


def test_keys_must_match_tensors():
    with Transport.single() as transport, pytest.raises(ValueError, match="keys"):
        compressed_mean(transport, [torch.ones(2)], build_compressor("int8"), keys=["a", "b"])


def _topk_by_definition(x: torch.Tensor, ratio: float) -> torch.Tensor:
    """The ceil(ratio * n) entries of largest magnitude, the rest zero (written from the spec)."""
    flat = x.reshape(-1)
    k = max(1, math.ceil(ratio * flat.numel()))
    keep = flat.abs().argsort(descending=True)[:k]
    out = torch.zeros_like(flat)
    out[keep] = flat[keep]
    return out.view(x.shape)


@pytest.fixture(scope="module")
def three_agents() -> list[dict[str, object]]:
    return run_agents(_agent, 3, timeout_s=90)


@pytest.mark.dist
def test_sparse_and_low_rank_means_against_the_dense_mean(three_agents):
    """Independent of the compressors' code: the first call (no error-feedback residual yet)
    against the dense mean, within what each compressor promises."""
    world, call = 3, 0
    xs = [_inputs(r, call) for r in range(world)]
    dense = [sum(x[i] for x in xs) / world for i in range(len(SHAPES))]
    norms = [[x[i].norm() for x in xs] for i in range(len(SHAPES))]

    # top-k: exactly the mean of each agent's top-k, and ||x - topk(x)||^2 <= (1 - k/n)||x||^2
    got = three_agents[0]["topk:0.1"][0][call]
    for i, g in enumerate(got):
        mine = sum(_topk_by_definition(x[i], 0.1) for x in xs) / world
        torch.testing.assert_close(g, mine, rtol=0, atol=1e-6)
        k = math.ceil(0.1 * g.numel())
        bound = sum(math.sqrt(1 - k / g.numel()) * n for n in norms[i]) / world
        assert (g - dense[i]).norm() <= bound + 1e-5
        assert (g - dense[i]).norm() > 0  # something was dropped

    # PowerSGD rank 2: vectors travel raw (exact mean); each agent's matrix is an orthogonal
    # projection of its own (||M - M_hat|| <= ||M||), so the mean has rank <= 2 * world and is
    # no further from the dense mean than the mean of the norms.
    got = three_agents[0]["powersgd:2"][0][call]
    for i, (g, shape) in enumerate(zip(got, SHAPES, strict=True)):
        if len(shape) < 2:
            torch.testing.assert_close(g, dense[i], rtol=0, atol=1e-6)
            continue
        mat = g.reshape(shape[0], -1)
        if 2 * world < min(mat.shape):  # (40, 30): a dense result would have rank 30
            assert torch.linalg.matrix_rank(mat).item() <= 2 * world
        assert (g - dense[i]).norm() <= sum(norms[i]) / world + 1e-5

    # top-k then int8 on the kept values: the top-k mean within int8's rounding of each
    # agent's largest kept value (absmax / 254 per value), and no value outside the supports.
    got = three_agents[0]["topk:0.2+int8"][0][call]
    for i, g in enumerate(got):
        tops = [_topk_by_definition(x[i], 0.2) for x in xs]
        mine = sum(tops) / world
        bound = sum(t.abs().max() / 254 for t in tops) / world
        assert (g - mine).abs().max() <= bound + 1e-6
        support = torch.stack([t != 0 for t in tops]).any(0)
        assert torch.all(g[~support] == 0)
