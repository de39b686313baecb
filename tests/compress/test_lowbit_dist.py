"""``sign`` and ``ternary`` over real gloo agents: the reduce-scatter scheme with error feedback
on both roundings, against an independent one-process replay, identical on every agent, exact
bytes."""

from __future__ import annotations

import math

import pytest
import torch

from ddla.aggregate import compressed_mean
from ddla.aggregate.wire import _scatter_sends_less
from ddla.comm import Transport
from ddla.compress import build_compressor
from ddla.compress.sign import Sign
from ddla.compress.ternary import Ternary
from ddla.testing import run_agents

WORLD, BLOCK, CALLS = 3, 64, 4
SHAPES = [(40, 30), (30,), (5, 3, 3)]  # 1275 values: chunks of 448, padding exercised
CODES = {f"sign:{BLOCK}": (Sign, 8), f"ternary:{BLOCK}": (Ternary, 5)}  # class, values per byte


def _inputs(rank: int, call: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 * rank + call)
    return [torch.randn(s, generator=gen) + 0.1 * rank for s in SHAPES]


def _agent(transport: Transport) -> dict[str, tuple[list[list[torch.Tensor]], list[int]]]:
    out = {}
    for spec in CODES:
        compressor = build_compressor(spec)
        means, sent = [], []
        for call in range(CALLS):  # later calls carry the residuals of earlier ones
            before = transport.stats.totals("train")["bytes_sent"]
            keys = [f"p{i}" for i in range(len(SHAPES))]
            xs = _inputs(transport.rank, call)
            means.append(compressed_mean(transport, xs, compressor, keys=keys))
            sent.append(transport.stats.totals("train")["bytes_sent"] - before)
        out[spec] = (means, sent)
    return out


def _replay(spec: str) -> tuple[list[torch.Tensor], int]:
    """Per call: each agent encodes chunk j of (its input + its residual for chunk j); agent j
    averages the decoded chunks, encodes (that mean + its own mean residual); all decode."""
    cls, per_byte = CODES[spec]
    code = cls(BLOCK)
    n = sum(math.prod(s) for s in SHAPES)
    chunk = math.ceil(n / (WORLD * BLOCK)) * BLOCK
    sent_res = [[torch.zeros(chunk) for _ in range(WORLD)] for _ in range(WORLD)]  # [r][j]
    mean_res = [torch.zeros(chunk) for _ in range(WORLD)]  # [j], kept by agent j
    out = []

    def send(x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        corrected = x + residual
        decoded = code.decompress(code.compress(corrected))
        return decoded, corrected - decoded

    for call in range(CALLS):
        flat = [torch.cat([t.reshape(-1) for t in _inputs(r, call)]) for r in range(WORLD)]
        padded = [torch.nn.functional.pad(f, (0, WORLD * chunk - n)) for f in flat]
        means = []
        for j in range(WORLD):
            total = torch.zeros(chunk)
            for r in range(WORLD):
                decoded, sent_res[r][j] = send(
                    padded[r][j * chunk : (j + 1) * chunk], sent_res[r][j]
                )
                total += decoded
            decoded, mean_res[j] = send(total / WORLD, mean_res[j])
            means.append(decoded)
        out.append(torch.cat(means)[:n])
    payload = math.ceil(chunk / per_byte) + 4 * (chunk // BLOCK)
    return out, 2 * (WORLD - 1) * payload  # all_to_all W-1 chunks out, all_gather W-1 copies


@pytest.fixture(scope="module")
def agents():
    return run_agents(_agent, WORLD, timeout_s=300)


@pytest.mark.parametrize("spec", sorted(CODES))
def test_the_scatter_scheme_is_the_one_taken(spec):
    xs = [torch.zeros(s) for s in SHAPES]
    assert _scatter_sends_less(build_compressor(spec), xs, WORLD, BLOCK)


@pytest.mark.dist
@pytest.mark.timeout(360)
@pytest.mark.parametrize("spec", sorted(CODES))
def test_low_bit_mean_matches_the_replay_on_every_agent(agents, spec):
    want, nbytes = _replay(spec)
    for rank, result in enumerate(agents):
        means, sent = result[spec]
        assert sent == [nbytes] * CALLS, rank
        for call in range(CALLS):
            got = torch.cat([t.reshape(-1) for t in means[call]])
            first = torch.cat([t.reshape(-1) for t in agents[0][spec][0][call]])
            assert torch.equal(got, first), f"{spec} rank {rank} call {call}: agents disagree"
            torch.testing.assert_close(got, want[call], msg=f"{spec} rank {rank} call {call}")


@pytest.mark.dist
@pytest.mark.timeout(360)
@pytest.mark.parametrize("spec", sorted(CODES))
def test_error_feedback_keeps_the_running_mean_close(agents, spec):
    """The sum of the means sent tracks the sum of the true means better than any one call:
    what low-bit codes drop is sent later."""
    means, _ = agents[0][spec]
    errors, total_err = [], torch.zeros(sum(math.prod(s) for s in SHAPES))
    for call in range(CALLS):
        true = sum(torch.cat([t.reshape(-1) for t in _inputs(r, call)]) for r in range(WORLD))
        err = torch.cat([t.reshape(-1) for t in means[call]]) - true / WORLD
        errors.append(err.norm())
        total_err += err
    assert total_err.norm() < max(errors) * 1.5  # residuals do not pile up call after call
    assert min(errors) > 0  # one bit per value did round
