"""gossip over real gloo agents: on a fixed model (lr 0) the agents' parameters after k rounds
are W^k X0 of an independent replay, and the consensus distance decays geometrically at the
topology's second eigenvalue; exponential reaches exact consensus in log2(n) rounds; finish
leaves every agent with the mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddla.comm import Transport
from ddla.errors import ConfigError
from ddla.sync import SyncConfig, build_strategy
from ddla.sync.topology import mixing_matrix, plan, second_eigenvalue
from ddla.testing import run_agents

# Spawning agents and importing torch take minutes on a loaded shared machine.
pytestmark = [pytest.mark.dist, pytest.mark.timeout(900)]

WORLD = 4
ROUNDS = 6


def _start(rank: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(100 + rank)
    return torch.randn(3 * 4 + 3, generator=gen)


def _agent(transport: Transport, topology: str) -> dict:
    torch.set_num_threads(1)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # a fixed model: only mixing moves it
    strategy = build_strategy(
        SyncConfig(strategy="gossip", topology=topology, consensus_every=1),
        transport=transport, model=model, optimizer=opt,
    )  # fmt: skip
    with torch.no_grad():  # agents start apart (after the strategy's common start)
        strategy._write(_start(transport.rank))
    before = strategy.consensus_distance()
    snapshots = []
    for _ in range(ROUNDS):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        opt.zero_grad()
        snapshots.append(strategy._flat().clone())
    strategy.finish()
    strategy.close()
    return {"before": before, "consensus": strategy.consensus, "snapshots": snapshots,
            "final": strategy._flat().clone()}  # fmt: skip


def _replay(topology: str) -> list[np.ndarray]:
    x = np.stack([_start(r).numpy().astype(np.float64) for r in range(WORLD)])
    out = []
    for t in range(ROUNDS):
        x = mixing_matrix(topology, WORLD, round_=t) @ x
        out.append(x.copy())
    return out


@pytest.mark.parametrize("topology", ["ring", "exponential"])
def test_gossip_mixes_as_the_matrix_and_consensus_decays_at_the_spectral_gap(topology):
    results = run_agents(_agent, WORLD, topology, timeout_s=300)
    replay = _replay(topology)
    for rank, r in enumerate(results):
        for t, snap in enumerate(r["snapshots"]):
            torch.testing.assert_close(snap.double(), torch.from_numpy(replay[t][rank]),
                                       rtol=1e-5, atol=1e-6)  # fmt: skip
    d = [results[0]["before"]] + [c[1] for c in results[0]["consensus"]]
    if topology == "ring":
        lam = second_eigenvalue(mixing_matrix("ring", WORLD))
        assert lam == pytest.approx(1 / 3)
        for k in range(1, len(d)):  # every non-consensus mode of the 4-ring decays at 1/3
            assert d[k] == pytest.approx(lam * d[k - 1], rel=1e-3)
    else:  # one peer at 1 then 2 hops: exact consensus after log2(4) = 2 rounds
        assert d[1] < d[0]
        assert d[2] < 1e-5 * d[0]
    mean = torch.stack([_start(r) for r in range(WORLD)]).mean(0)
    for r in results:
        torch.testing.assert_close(r["final"], mean, rtol=1e-5, atol=1e-6)


def test_topologies_are_doubly_stochastic():
    for topology in ("ring", "torus", "exponential", "random"):
        for n in (2, 3, 4, 6, 8):
            for t in range(3):
                w = mixing_matrix(topology, n, round_=t, seed=1)
                np.testing.assert_allclose(w.sum(0), 1.0)
                np.testing.assert_allclose(w.sum(1), 1.0)
                assert (w >= 0).all()
    # the torus of 6 is 2 x 3: rank 0's neighbours are 3 (other row) and 1, 2 (its row)
    assert plan("torus", 6, rank=0, round_=0).recv == (1, 2, 3)
    # a larger ring mixes more slowly (smaller spectral gap) than a torus of the same size
    assert second_eigenvalue(mixing_matrix("ring", 16)) > second_eigenvalue(
        mixing_matrix("torus", 16)
    )


def test_gossip_refuses_compression():
    from ddla.config import RunConfig

    with pytest.raises(ConfigError, match="CHOCO"):
        RunConfig.load(None, ["agents=2", "sync.strategy=gossip", "sync.compress=int8"])
