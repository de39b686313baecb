"""Partitioners on real labels (sklearn digits): invariants, skew, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddla.data import PARTITIONERS, load_dataset, parse_partition, partition, partition_stats
from ddla.data.partition import IID, Contiguous, Dirichlet, Quantity, Shards
from ddla.errors import ConfigError

SPECS = ["iid", "dirichlet:0.1", "dirichlet:10", "shards:2", "quantity:0.5"]


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return load_dataset("digits", seed=0).y_train.numpy()


def mean_classes(parts, labels) -> float:
    return partition_stats(parts, labels, 10)["mean_classes_per_agent"]


@pytest.mark.parametrize("spec", SPECS)
def test_parts_are_sorted_disjoint_nonempty_and_cover(labels, spec):
    parts = partition(spec, labels, n_agents=10, seed=0)
    assert len(parts) == 10
    for p in parts:
        assert p.dtype == np.int64 and len(p) >= 1
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates
    merged = np.concatenate(parts)
    assert len(merged) == len(np.unique(merged)) == len(labels)
    assert merged.min() == 0 and merged.max() == len(labels) - 1


@pytest.mark.parametrize("spec", SPECS)
def test_deterministic_per_seed_and_different_across_seeds(labels, spec):
    a = partition(spec, labels, n_agents=8, seed=3)
    b = partition(spec, torch.from_numpy(labels), n_agents=8, seed=3)
    c = partition(spec, labels, n_agents=8, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_sizes_differ_by_at_most_one_and_see_all_classes(labels):
    parts = partition("iid", labels, n_agents=7, seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert mean_classes(parts, labels) == 10


def test_dirichlet_small_alpha_is_label_skewed(labels):
    iid = mean_classes(partition("iid", labels, n_agents=10, seed=0), labels)
    skew = mean_classes(partition("dirichlet:0.1", labels, n_agents=10, seed=0), labels)
    mild = mean_classes(partition("dirichlet:100", labels, n_agents=10, seed=0), labels)
    assert skew <= 6 < iid == mild == 10
    # dominant-class share: near 1/10 for IID, much larger under skew
    stats = partition_stats(partition("dirichlet:0.1", labels, 10, seed=0), labels, 10)
    top_share = np.mean([max(c) / sum(c) for c in stats["class_counts"]])
    assert top_share > 0.5


def test_dirichlet_tiny_alpha_still_gives_every_agent_a_sample(labels):
    parts = partition("dirichlet:0.01", labels, n_agents=100, seed=1)
    assert min(len(p) for p in parts) >= 1
    assert sum(len(p) for p in parts) == len(labels)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shards_give_at_most_k_classes_per_agent(labels, k):
    parts = partition(f"shards:{k}", labels, n_agents=10, seed=0)
    stats = partition_stats(parts, labels, 10)
    assert max(stats["classes_per_agent"]) <= k
    assert stats["dropped"] == 0
    # shards are near-equal in size (they differ only as class sizes do), as in FedAvg
    assert max(stats["sizes"]) / min(stats["sizes"]) < 1.1


def test_shards_with_fewer_shards_than_classes_drop_the_rest(labels):
    parts = partition("shards:1", labels, n_agents=3, seed=0)
    stats = partition_stats(parts, labels, 10)
    assert stats["classes_per_agent"] == [1, 1, 1]
    assert stats["dropped"] > 0
    assert len({int(labels[p[0]]) for p in parts}) == 3


def test_quantity_skews_sizes_but_not_labels(labels):
    iid_sizes = [len(p) for p in partition("iid", labels, n_agents=10, seed=0)]
    parts = partition("quantity:0.3", labels, n_agents=10, seed=0)
    sizes = [len(p) for p in parts]
    assert max(iid_sizes) / min(iid_sizes) < 1.01
    assert max(sizes) / min(sizes) > 10
    biggest = parts[int(np.argmax(sizes))]
    # the largest agent's label mix matches the whole within a few points
    share = np.bincount(labels[biggest], minlength=10) / len(biggest)
    assert np.abs(share - np.bincount(labels, minlength=10) / len(labels)).max() < 0.05


def test_quantity_tiny_alpha_keeps_every_agent_nonempty(labels):
    parts = partition("quantity:0.01", labels, n_agents=50, seed=0)
    assert min(len(p) for p in parts) == 1
    assert sum(len(p) for p in parts) == len(labels)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("iid", IID()),
        ("dirichlet:0.5", Dirichlet(alpha=0.5)),
        (" shards:3 ", Shards(k=3)),
        ("quantity:2", Quantity(alpha=2.0)),
        ("contiguous", Contiguous()),
    ],
)
def test_parse_partition_accepts_the_documented_forms(spec, expected):
    assert parse_partition(spec) == expected


def test_every_registered_scheme_parses():
    for name in PARTITIONERS:
        spec = name if name in ("iid", "contiguous") else f"{name}:1"
        assert isinstance(parse_partition(spec), PARTITIONERS[name])


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("random", "unknown scheme 'random'"),
        ("iid:3", "iid takes no parameter"),
        ("contiguous:2", "contiguous takes no parameter"),
        ("dirichlet", "dirichlet needs a parameter"),
        ("dirichlet:", "dirichlet needs a parameter"),
        ("dirichlet:0", "ALPHA must be > 0"),
        ("dirichlet:-1", "ALPHA must be > 0"),
        ("dirichlet:nan", "ALPHA must be > 0"),
        ("dirichlet:inf", "ALPHA must be > 0"),
        ("quantity:abc", "ALPHA must be a number"),
        ("shards:0", "K must be >= 1"),
        ("shards:1.5", "K must be an integer"),
        ("shards:two", "K must be an integer"),
    ],
)
def test_bad_specs_name_the_allowed_forms(spec, why):
    with pytest.raises(ConfigError) as info:
        parse_partition(spec)
    message = str(info.value)
    assert why in message
    for form in ("iid", "dirichlet:ALPHA", "shards:K", "quantity:ALPHA"):
        assert form in message
    assert info.value.help


def test_direct_construction_validates_too():
    with pytest.raises(ConfigError, match="alpha must be a positive number"):
        Dirichlet(alpha=0.0)
    with pytest.raises(ConfigError, match="K must be an integer >= 1"):
        Shards(k=True)


@pytest.mark.parametrize("n_agents", [0, -1, 2.5])
def test_bad_agent_counts(labels, n_agents):
    with pytest.raises(ConfigError, match="number of agents must be an integer >= 1"):
        partition("iid", labels, n_agents=n_agents, seed=0)


def test_more_agents_than_samples(labels):
    with pytest.raises(ConfigError, match="cannot give 11 agents at least one sample each"):
        partition("iid", labels[:10], n_agents=11, seed=0)
    # exactly one sample per agent is fine
    parts = partition("dirichlet:0.1", labels[:10], n_agents=10, seed=0)
    assert [len(p) for p in parts] == [1] * 10


def test_too_many_shards(labels):
    with pytest.raises(ConfigError, match="needs 30 shards but there are only 10 samples"):
        partition("shards:3", labels[:10], n_agents=10, seed=0)
