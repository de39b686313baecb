"""Real gloo agents: handshake over the rendezvous store, sealing, sharing, pulls, secagg."""

from __future__ import annotations

import pytest
import torch

from ddla.data.sharing import (
    DataOwner,
    PullRequest,
    exchange_pool,
    pull_round,
    recv_sealed,
    send_sealed,
)
from ddla.errors import AuthenticationError, TamperedPayloadError
from ddla.security.audit import AuditLog, verify
from ddla.security.envelope import Envelope
from ddla.security.identity import handshake
from ddla.security.policy import AccessPolicy, PolicyEnforcer
from ddla.security.secagg import SecureAggregator
from ddla.testing import run_agents

pytestmark = pytest.mark.dist
SECRET = b"d" * 32


_JOINS = iter(range(10**6))


def _join(transport, secrets):
    return handshake(
        transport.store,
        prefix=f"auth{next(_JOINS)}",
        rank=transport.rank,
        world_size=transport.world_size,
        secret=secrets[transport.rank],
        timeout_s=10,
    )


def _auth_outcome(transport, secrets):
    try:
        session = _join(transport, secrets)
    except AuthenticationError as exc:
        return f"refused: {exc}"
    # Only now may data flow; prove the channel works.
    env = Envelope(session)
    if transport.rank == 0:
        for peer in range(1, transport.world_size):
            send_sealed(transport, env, f"hi {peer}".encode(), dst=peer)
        return [recv_sealed(transport, env, src=p).decode() for p in range(1, transport.world_size)]
    got = recv_sealed(transport, env, src=0).decode()
    send_sealed(transport, env, f"{got}, from {transport.rank}".encode(), dst=0)
    return got


def _life(transport, run_dir):
    """One 3-agent run through everything (spawning agents is the slow part of these tests)."""
    return {
        "hello": _auth_outcome(transport, [SECRET] * 3),
        "pool": _pool(transport, run_dir),
        "pulls": _pulls(transport, run_dir),
        "secagg": _secure_mean(transport),
        "layer": _secure_layer(transport),
    }


@pytest.fixture(scope="module")
def life(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("life")
    return run_agents(_life, 3, str(run_dir), timeout_s=120), run_dir


def test_handshake_over_the_rendezvous_store(life):
    out = [o["hello"] for o in life[0]]
    assert out == [["hi 1, from 1", "hi 2, from 2"], "hi 1", "hi 2"]


def test_wrong_secret_agent_is_refused_by_all_and_no_data_flows():
    out = run_agents(_auth_outcome, 3, [SECRET, SECRET, b"x" * 32], timeout_s=60)
    assert all(o.startswith("refused") for o in out)
    assert "agent 2 could not prove" in out[0] and "agent 2 could not prove" in out[1]
    assert "most likely the wrong one" in out[2]


def _pool(transport, run_dir):
    session = _join(transport, [SECRET] * transport.world_size)
    audit = AuditLog.for_run(run_dir, agent=transport.rank)
    r = transport.rank
    x = torch.full((r + 1, 3), float(r))
    y = torch.full((r + 1,), r, dtype=torch.int64)
    px, py = exchange_pool(transport, Envelope(session, audit=audit), x, y, audit=audit)
    return py.tolist(), px[:, 0].tolist(), transport.stats.totals("data")["bytes_sent"]


def test_shared_pool_reaches_every_agent_sealed(life):
    out, tmp_path = [o["pool"] for o in life[0]], life[1]
    assert out[0][0] == [1, 1, 2, 2, 2]
    assert out[1][0] == [0, 2, 2, 2]
    assert out[2][0] == [0, 1, 1]
    assert out[2][1] == [0.0, 1.0, 1.0]
    assert all(o[2] > 0 for o in out)  # counted under tag "data"
    assert verify(tmp_path).ok


POLICY = {
    "agents": {
        0: [{"peers": [1], "kinds": ["samples"], "classes": [0], "max_samples": 3}],
        1: [{"peers": "*", "kinds": ["features"], "classes": "*", "max_samples": 2}],
    }
}


def _pulls(transport, run_dir):
    session = _join(transport, [SECRET] * transport.world_size)
    audit = AuditLog.for_run(run_dir, agent=transport.rank)
    env = Envelope(session, audit=audit)
    r = transport.rank
    x = torch.arange(8 * 2, dtype=torch.float32).reshape(8, 2) + 100 * r
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    owner = DataOwner(
        x=x,
        y=y,
        enforcer=PolicyEnforcer(AccessPolicy.from_dict(POLICY), owner=r),
        feature_fn=lambda t: t.sum(dim=1, keepdim=True),
    )
    wants = {
        0: {},
        1: {0: PullRequest(classes=(0,), count=5)},  # allowed, capped at 3
        2: {
            0: PullRequest(classes=(0,), count=1),  # forbidden: 2 may not pull from 0
            1: PullRequest(classes=(1,), count=1, kind="features"),
        },
    }[r]
    res = pull_round(transport, env, owner, wants, audit=audit)
    again = pull_round(transport, env, owner, wants, audit=audit)  # quota used up for 1
    return (
        {
            p: (
                v.granted,
                v.reason,
                None if v.y is None else v.y.tolist(),
                None if v.x is None else v.x.shape[1],
            )
            for p, v in res.items()
        },
        {p: v.granted for p, v in again.items()},
    )


def test_pulls_obey_the_owners_policy(life):
    out, tmp_path = [o["pulls"] for o in life[0]], life[1]
    first, again = out[1]
    assert first[0][0] == 3 and first[0][2] == [0, 0, 0] and first[0][3] == 2
    assert again == {0: 0}
    first, again = out[2]
    assert first[0][0] == 0
    assert first[0][1] == "no rule of agent 0 lets agent 2 pull samples of classes [0]"
    assert first[1][0] == 1 and first[1][3] == 1  # a feature, not the raw sample
    assert out[0] == ({}, {})
    logs = {r: (tmp_path / "audit" / f"agent{r}.jsonl").read_text() for r in range(3)}
    assert '"deny"' in logs[0] and '"serve"' in logs[0]
    assert '"refusal"' in logs[2] and '"pull"' in logs[1]
    assert verify(tmp_path).ok


def _tampered(transport):
    session = _join(transport, [SECRET] * 2)
    env = Envelope(session)
    if transport.rank == 0:
        sealed = bytearray(env.seal(b"weights" * 100, dst=1))
        sealed[-5] ^= 0xFF  # a man in the middle flips a byte
        transport.send(torch.tensor([len(sealed)], dtype=torch.int64), dst=1, tag="data")
        transport.send(torch.frombuffer(sealed, dtype=torch.uint8), dst=1, tag="data")
        good = env.seal(b"fine", dst=1)
        for _ in range(2):  # the authentic one, then the same bytes replayed
            transport.send(torch.tensor([len(good)], dtype=torch.int64), dst=1, tag="data")
            transport.send(torch.frombuffer(bytearray(good), dtype=torch.uint8), dst=1, tag="data")
        return None
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(recv_sealed(transport, env, src=0).decode())
        except TamperedPayloadError as exc:
            outcomes.append(str(exc))
    return outcomes


def test_tampered_and_replayed_payloads_over_gloo():
    out = run_agents(_tampered, 2, timeout_s=60)[1]
    assert "tag mismatch" in out[0] and out[1] == "fine" and "replayed" in out[2]


def _secure_mean(transport):
    session = _join(transport, [SECRET] * transport.world_size)
    agg = SecureAggregator(session)
    torch.manual_seed(transport.rank)
    x = torch.randn(1000)
    plain = x.clone()
    transport.all_reduce(plain, op="avg", tag="plain")
    masked = agg.masked(x, round=99)
    secure = agg.all_reduce(transport, x.clone(), op="avg", tag="secure")
    t = transport.stats
    return (
        plain,
        secure,
        masked,
        t.totals("plain")["bytes_sent"],
        t.totals("secure")["bytes_sent"],
    )


def _secure_layer(transport):
    from ddla.aggregate import Aggregator, Protection

    session = _join(transport, [SECRET] * transport.world_size)
    agg = Aggregator(transport, protection=Protection(masking=SecureAggregator(session)))
    torch.manual_seed(10 + transport.rank)
    x = torch.randn(300)
    plain = transport.all_reduce(x.clone(), op="avg", tag="plain-layer")
    before = transport.stats.totals("masked")["bytes_sent"]
    via_mean = agg.mean([x.clone()], tag="masked")[0]
    via_mean_ = agg.mean_(x.clone(), tag="masked")
    via_hook = agg.bucket_sum(x.clone(), tag="masked").wait() / transport.world_size
    masked_bytes = transport.stats.totals("masked")["bytes_sent"] - before
    return plain, via_mean, via_mean_, via_hook, masked_bytes, transport.stats.totals("plain-layer")


def test_secure_aggregation_layer_masks_every_mean(life):
    for plain, via_mean, via_mean_, via_hook, masked_bytes, plain_totals in (
        o["layer"] for o in life[0]
    ):
        for secure in (via_mean, via_mean_, via_hook):
            torch.testing.assert_close(secure, plain, atol=1e-6, rtol=0)
        # Three masked means of the fp32 path, each an int64 all-reduce: 2x the plain bytes.
        assert masked_bytes == 3 * 2 * plain_totals["bytes_sent"]


def test_secure_all_reduce_matches_plain_and_costs_2x(life):
    out = [o["secagg"] for o in life[0]]
    for plain, secure, _masked, plain_bytes, secure_bytes in out:
        torch.testing.assert_close(secure, plain, atol=1e-6, rtol=0)
        assert secure_bytes == 2 * plain_bytes
    # What each agent sends: its input in fixed point (round(x * 2**24) in Z_{2**52}) plus
    # pairwise masks that cancel in the sum. Written out here, not taken from ddla.
    ring, frac = 1 << 52, 24
    encoded = []
    for rank in range(len(out)):
        torch.manual_seed(rank)  # the agent's input, as _secure_mean draws it
        encoded.append(torch.round(torch.randn(1000).double() * 2**frac).long() % ring)
    masked = [o[2] for o in out]
    assert torch.equal(sum(masked) % ring, sum(encoded) % ring)  # the masks cancel exactly
    for m, e in zip(masked, encoded, strict=True):
        assert m.dtype == torch.int64 and bool(((m >= 0) & (m < ring)).all())
        assert (m == e).sum() <= 1  # nothing of the input shows through
        # Encodings of N(0, 1) values sit within 2**28 of 0 (mod the ring); the masked values
        # are uniform over the ring: about half lie in its middle half.
        middle = ((m >= ring // 4) & (m < 3 * ring // 4)).double().mean().item()
        assert 0.4 < middle < 0.6


def _local_sgd(transport, secure):
    from ddla.aggregate import Protection
    from ddla.sync import SyncConfig, build_strategy

    session = _join(transport, [SECRET] * transport.world_size)
    protection = Protection(masking=SecureAggregator(session)) if secure else None
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    strategy = build_strategy(
        SyncConfig(strategy="local_sgd", every=5),
        transport=transport,
        model=model,
        optimizer=opt,
        protection=protection,
    )
    gen = torch.Generator().manual_seed(transport.rank)
    for _ in range(20):
        x, y = torch.randn(16, 8, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(strategy.train_model(x), y).backward()
        opt.step()
    strategy.finish()
    strategy.close()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_local_sgd_with_secure_aggregation_matches_plain():
    plain = run_agents(_local_sgd, 2, False, timeout_s=90)
    secure = run_agents(_local_sgd, 2, True, timeout_s=90)
    torch.testing.assert_close(secure[0], secure[1], atol=0, rtol=0)  # agents agree exactly
    # Four syncs of fixed-point (2**-24) averages: within float noise of the plain run.
    torch.testing.assert_close(secure[0], plain[0], atol=1e-5, rtol=0)


def _secagg_dropout(transport):
    """3 agents mask round 0; agent 2 dies before sending; the survivors regroup without it,
    remove their masks with it, and sum over the new group."""
    import os

    session = _join(transport, [SECRET] * transport.world_size)
    agg = SecureAggregator(session)
    x = (transport.rank + 1) * torch.linspace(-1.0, 1.0, 1000)
    contribution = agg.masked(x, round=0)
    if transport.rank == 2:
        os._exit(3)  # a real process death after masking, before anything is sent
    survivors = transport.continue_without([2], timeout_s=60)
    unfixed = contribution.clone()
    survivors.all_reduce(unfixed, op="sum", tag="unfixed")
    fixed = agg.remove_dropped(contribution, round=0, dropped=[2])
    survivors.all_reduce(fixed, op="sum", tag="secure")
    return agg.decode(unfixed), agg.decode(fixed), survivors.world_size


def test_secure_aggregation_survives_a_dropout_over_gloo():
    from ddla.security.secagg import decode, encode

    out = run_agents(_secagg_dropout, 3, timeout_s=180, allow_exit=[2])
    xs = [(r + 1) * torch.linspace(-1.0, 1.0, 1000) for r in range(2)]
    # The reference, written independently: the fixed-point encodings of the survivors' inputs,
    # summed in the ring, decoded (masking is exact in fixed point).
    want = decode((encode(xs[0]) + encode(xs[1])) % 2**52)
    for unfixed, fixed, world in out[:2]:
        assert world == 2
        assert torch.equal(fixed, want)
        # Without removing the dead agent's masks the survivors' sum is noise.
        assert (unfixed - want).abs().max() > 1.0
