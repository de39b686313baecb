"""Secure aggregation with compression over real gloo agents.

Every accepted ``sync.compress`` is masked: what a peer receives never equals the sender's
unmasked encoding, the mean equals an independent one-process computation of the agents'
quantized mean on the shared grid, every training sync is audited ``secure: true``, and the
bytes are the documented ring width — measured against the unmasked compressed mean.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from ddla.aggregate import Aggregator, Protection
from ddla.aggregate.bits import pack_bits
from ddla.aggregate.secure import quantized_reference, ring_bits
from ddla.compress import build_compressor
from ddla.security.audit import AuditLog
from ddla.security.identity import handshake
from ddla.security.secagg import SecureAggregator
from ddla.testing import run_agents

pytestmark = pytest.mark.dist
SECRET = b"s" * 32
#: spec -> (levels, block) of the shared grid
GRIDS = {"fp16": (2047, 128), "bf16": (255, 128), "int8": (127, 128), "int4": (7, 128)}
N = 2 * 4 * 128 + 77  # not a multiple of anything, so padding is exercised


def _session(transport, prefix):
    return handshake(
        transport.store, prefix=prefix, rank=transport.rank,
        world_size=transport.world_size, secret=SECRET, timeout_s=20,
    )  # fmt: skip


def _inputs(world):
    return [torch.randn(N, generator=torch.Generator().manual_seed(100 + r)) for r in range(world)]


def _masked_means(transport):
    """Each spec once, masked and unmasked, with the masked all-to-all's received bytes."""
    session = _session(transport, "agg-means")
    masking = SecureAggregator(session)
    world, me = transport.world_size, transport.rank
    x = _inputs(world)[me]
    received: list[torch.Tensor] = []
    real_all_to_all = transport.all_to_all

    def recording(tensor, **kw):  # the real collective; we only keep what arrived
        out = real_all_to_all(tensor, **kw)
        received.append(out.clone())
        return out

    transport.all_to_all = recording
    out = {}
    for spec in GRIDS:
        comp = build_compressor(spec)
        plain = Aggregator(transport, compressor=comp)
        secure = Aggregator(transport, compressor=comp, protection=Protection(masking=masking))
        received.clear()
        t0 = transport.stats.totals(f"s-{spec}")["bytes_sent"]
        parts = [x[:300].view(3, 100), x[300:]]  # two tensors of two shapes in one call
        mean = torch.cat([m.reshape(-1) for m in secure.mean(parts, tag=f"s-{spec}")])
        masked_bytes = transport.stats.totals(f"s-{spec}")["bytes_sent"] - t0
        unmasked = torch.cat([m.reshape(-1) for m in plain.mean(parts, tag=f"p-{spec}")])
        out[spec] = {
            "mean": mean.reshape(-1),
            "unmasked": unmasked.reshape(-1),
            "received": received[0],
            "masked_bytes": masked_bytes,
            "plain_bytes": transport.stats.totals(f"p-{spec}")["bytes_sent"],
        }
    return out


@pytest.fixture(scope="module")
def means():
    return {world: run_agents(_masked_means, world, timeout_s=180) for world in (3, 4)}


@pytest.mark.parametrize("world", [3, 4])
@pytest.mark.parametrize("spec", list(GRIDS))
def test_masked_mean_is_the_quantized_mean(means, world, spec):
    levels, block = GRIDS[spec]
    inputs = _inputs(world)
    reference = quantized_reference(inputs, levels=levels, block=block).float()
    true = torch.stack(inputs).mean(0)
    results = means[world]
    for r in range(world):  # every agent holds the same bits
        assert torch.equal(results[r][spec]["mean"], results[0][spec]["mean"])
    torch.testing.assert_close(results[0][spec]["mean"], reference, atol=1e-7, rtol=0)
    # Half a step of the shared grid per value (the scale is the block's absmax over agents).
    absmax = torch.stack(inputs).abs().amax(0)
    padded = torch.zeros(math.ceil(N / block) * block)
    padded[:N] = absmax
    step = padded.view(-1, block).amax(1).repeat_interleave(block)[:N] / levels
    assert bool(((results[0][spec]["mean"] - true).abs() <= step / 2 + 1e-7).all())
    # ... and the unmasked compressed mean is within the same resolution of it.
    assert bool(((results[0][spec]["unmasked"] - true).abs() <= step + 1e-6).all())


@pytest.mark.parametrize("world", [3, 4])
@pytest.mark.parametrize("spec", list(GRIDS))
def test_peers_never_see_the_unmasked_encoding(means, world, spec):
    levels, block = GRIDS[spec]
    inputs = _inputs(world)
    bits = ring_bits(levels, world)
    chunk = math.ceil(N / (world * block)) * block
    padded = torch.zeros(world, world * chunk)
    for i, x in enumerate(inputs):
        padded[i, :N] = x
    scales = padded.view(world, -1, block).abs().amax(2).amax(0) / levels
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    for me in range(world):
        got = means[world][me][spec]["received"].chunk(world)
        for sender in range(world):
            codes = torch.round(padded[sender].view(-1, block) / safe[:, None])
            codes = codes.clamp(-levels, levels).to(torch.int64).view(-1)
            mine = codes[me * chunk : (me + 1) * chunk] % (1 << bits)
            unmasked = pack_bits(mine, bits=bits)
            assert got[sender].numel() == unmasked.numel()
            assert not torch.equal(got[sender], unmasked)
            # Masked bytes look uniform: about 1/256 of them match by chance, not most.
            assert (got[sender] == unmasked).float().mean() < 0.05


@pytest.mark.parametrize("spec", list(GRIDS))
def test_masked_bytes_are_the_ring_width(means, spec):
    levels, block = GRIDS[spec]
    world = 4
    row = means[world][0][spec]
    bits = ring_bits(levels, world)
    chunk = math.ceil(N / (world * block)) * block
    # max all-reduce of one fp32 scale per block (ring: 2(W-1)/W) + all-to-all of W-1 packed
    # chunks + all-gather of the chunk sum to W-1 peers.
    n_blocks = world * chunk // block
    scales = 2 * (world - 1) * math.ceil(4 * n_blocks / world)
    expected = scales + 2 * (world - 1) * (chunk * bits // 8)
    assert row["masked_bytes"] == pytest.approx(expected, rel=0.01)
    ratio = row["masked_bytes"] / row["plain_bytes"]
    print(f"{spec}: masked/unmasked bytes at 4 agents = {ratio:.3f}")
    # Close to the compressed size: within 1.6x (int4 codes grow 4 -> 6 bits at 4 agents).
    assert ratio < 1.6


def _strategies(transport, run_dir):
    """Every strategy x accepted compressor, secure and audited, a few syncs each."""
    from ddla.sync import SyncConfig, build_strategy

    session = _session(transport, "agg-strategies")
    audit = AuditLog.for_run(run_dir, agent=transport.rank)
    protection = Protection(masking=SecureAggregator(session), audit=audit)
    finals = {}
    for strategy in ("allreduce", "local_sgd", "diloco", "streaming_diloco"):
        for spec in ("none", "fp16", "bf16", "int8", "int4"):
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(),
                                        torch.nn.Linear(32, 3))  # fmt: skip
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            every = 1 if strategy == "allreduce" else 2
            fragments = {"fragments": 2} if strategy == "streaming_diloco" else {}
            cfg = SyncConfig(strategy=strategy, every=every, compress=spec, **fragments)
            s = build_strategy(cfg, transport=transport, model=model, optimizer=opt,
                               protection=protection)  # fmt: skip
            audit.append("mark", combo=f"{strategy}/{spec}")
            gen = torch.Generator().manual_seed(transport.rank)
            for _ in range(4):
                x, y = torch.randn(16, 8, generator=gen), torch.randint(0, 3, (16,), generator=gen)
                opt.zero_grad()
                torch.nn.functional.cross_entropy(s.train_model(x), y).backward()
                opt.step()
            s.finish()
            s.close()
            finals[f"{strategy}/{spec}"] = torch.cat([p.detach().reshape(-1) for p in
                                                      model.parameters()])  # fmt: skip
    audit.append("leave")
    return finals


def test_every_strategy_and_compressor_syncs_securely_and_is_audited(tmp_path):
    results = run_agents(_strategies, 3, str(tmp_path), timeout_s=300)
    for combo, params in results[0].items():
        for r in (1, 2):  # agents agree exactly after every secure sync
            torch.testing.assert_close(results[r][combo], params, atol=0, rtol=0, msg=combo)
    for rank in range(3):
        lines = (tmp_path / "audit" / f"agent{rank}.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        combo, syncs = None, {}
        for rec in records:
            if rec["event"] == "mark":
                combo = rec["data"]["combo"]
            elif rec["event"] == "sync":
                assert rec["data"]["secure"] is True, (combo, rec)
                syncs[combo] = syncs.get(combo, 0) + 1
        assert set(syncs) == set(results[0]), "every combination synchronized"
        for combo, count in syncs.items():
            # allreduce: a sync per step (per bucket); periodic: 2 rounds of H=2 (+ buffers)
            assert count >= (4 if combo.startswith("allreduce") else 2), (combo, count)
