"""AgentBatches against a brute-force materialised stream; resumability; errors."""

from __future__ import annotations

import numpy as np
import pytest

from ddla.data import AgentBatches
from ddla.errors import ConfigError, DataError


def brute_force_stream(indices: np.ndarray, seed: int, rank: int, epochs: int) -> np.ndarray:
    """The specification, spelled out: concatenated per-epoch permutations."""
    return np.concatenate(
        [
            indices[np.random.default_rng([seed, rank, e]).permutation(len(indices))]
            for e in range(epochs)
        ]
    )


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (10, 10), (7, 25), (1, 4), (100, 32)])
def test_matches_materialised_stream_across_epoch_boundaries(n, batch_size):
    indices = np.arange(1000, 1000 + 3 * n, 3)  # arbitrary global ids
    seed, rank = 11, 2
    steps = 40
    stream = brute_force_stream(indices, seed, rank, epochs=steps * batch_size // n + 2)
    batches = AgentBatches(indices, batch_size=batch_size, seed=seed, rank=rank)
    for step in range(steps):
        got = batches.batch(step)
        assert got.dtype == np.int64 and len(got) == batch_size
        np.testing.assert_array_equal(got, stream[step * batch_size : (step + 1) * batch_size])


def test_each_epoch_visits_every_sample_once():
    indices = np.arange(12)
    batches = AgentBatches(indices, batch_size=4, seed=0, rank=0)
    epoch0 = np.concatenate([batches.batch(s) for s in range(3)])
    epoch1 = np.concatenate([batches.batch(s) for s in range(3, 6)])
    assert sorted(epoch0) == sorted(epoch1) == list(range(12))
    assert not np.array_equal(epoch0, epoch1)


def test_no_hidden_state_out_of_order_and_fresh_instance_agree():
    indices = np.arange(50)
    a = AgentBatches(indices, batch_size=8, seed=5, rank=1)
    forward = [a.batch(s) for s in range(30)]
    b = AgentBatches(indices, batch_size=8, seed=5, rank=1)
    for s in reversed(range(30)):  # resume anywhere, in any order
        np.testing.assert_array_equal(b.batch(s), forward[s])


def test_ranks_and_seeds_give_different_orders():
    indices = np.arange(64)
    base = AgentBatches(indices, batch_size=16, seed=0, rank=0).batch(0)
    assert not np.array_equal(base, AgentBatches(indices, batch_size=16, seed=0, rank=1).batch(0))
    assert not np.array_equal(base, AgentBatches(indices, batch_size=16, seed=1, rank=0).batch(0))


def test_far_step_is_cheap_and_exact():
    indices = np.arange(5000)
    batches = AgentBatches(indices, batch_size=64, seed=3, rank=4)
    step = 10**6
    got = batches.batch(step)  # computed from the step alone: no walk through 10**6 batches
    pos = step * 64
    epoch, offset = divmod(pos, 5000)
    perm = indices[np.random.default_rng([3, 4, epoch]).permutation(5000)]
    expected = np.concatenate(
        [perm[offset:], indices[np.random.default_rng([3, 4, epoch + 1]).permutation(5000)]]
    )[:64]
    np.testing.assert_array_equal(got, expected)


def test_epoch_is_fractional_progress():
    batches = AgentBatches(np.arange(10), batch_size=4, seed=0, rank=0)
    assert [batches.epoch(s) for s in (0, 1, 5)] == [0.0, 0.4, 2.0]
    assert batches.num_samples == 10


def test_returned_batch_is_a_copy():
    batches = AgentBatches(np.arange(10), batch_size=4, seed=0, rank=0)
    first = batches.batch(0)
    first[:] = -1
    assert (batches.batch(0) >= 0).all()


def test_errors():
    with pytest.raises(DataError, match="agent 3 has no training samples"):
        AgentBatches(np.array([], dtype=np.int64), batch_size=4, seed=0, rank=3)
    with pytest.raises(DataError, match="1-D integer array"):
        AgentBatches(np.zeros((2, 2), dtype=np.int64), batch_size=4, seed=0, rank=0)
    with pytest.raises(DataError, match="1-D integer array"):
        AgentBatches(np.array([0.5, 1.5]), batch_size=4, seed=0, rank=0)
    for bad in (0, -2, 1.5):
        with pytest.raises(ConfigError, match="batch size must be an integer >= 1"):
            AgentBatches(np.arange(4), batch_size=bad, seed=0, rank=0)
    with pytest.raises(ConfigError, match="seed and rank must be >= 0"):
        AgentBatches(np.arange(4), batch_size=2, seed=-1, rank=0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        AgentBatches(np.arange(4), batch_size=2, seed=0, rank=0).batch(-1)
