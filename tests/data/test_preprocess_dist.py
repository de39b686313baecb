"""data.preprocess over real gloo agents: the joint fit equals the fit on the concatenated data.

Each agent holds its shard of sklearn digits (an iid or a skewed Dirichlet split); the agents
fit through the Transport and the result is compared with an independent numpy fit of all
shards concatenated. Every agent must hold the bitwise same transform, and the only bytes on
the wire are the moments (counted by the Transport under tag ``preprocess``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddla.aggregate import Protection
from ddla.comm.ring import ring_bytes
from ddla.data import load_dataset, partition
from ddla.data.preprocess import parse_preprocess
from ddla.data.preprocess.fit import TAG, fit_transform, payload_bytes
from ddla.errors import ConfigError
from ddla.security.identity import handshake
from ddla.security.secagg import SecureAggregator
from ddla.testing import run_agents

pytestmark = pytest.mark.dist


def _digits():
    return load_dataset("digits", seed=0)


def _shards(split: str, world: int):
    ds = _digits()
    return ds, partition(split, ds.y_train.numpy(), world, seed=0)


SPECS = ("standardize", "minmax", "pca:6:whiten")


def _fit(transport, specs, split, secure=False):
    """Fit each spec in turn on this agent's shard; per spec: transform tensors, count, bytes
    moved on any tag, bytes under tag preprocess, and the transform applied to 5 test rows."""
    torch.set_num_threads(1)
    ds, parts = _shards(split, transport.world_size)
    x = ds.x_train[torch.from_numpy(parts[transport.rank])]
    protection = None
    if secure:
        session = handshake(
            transport.store, prefix="prep", rank=transport.rank,
            world_size=transport.world_size, secret=b"k" * 32, timeout_s=60,
        )  # fmt: skip
        protection = Protection(masking=SecureAggregator(session))
    out = {}
    for spec in specs:
        before, tag_before = transport.stats.totals(), transport.stats.totals(TAG)
        try:
            t = fit_transform(parse_preprocess(spec), x, transport, protection=protection)
        except ConfigError as exc:
            out[spec] = str(exc)
            continue
        after, tag_after = transport.stats.totals(), transport.stats.totals(TAG)
        moved = {k: after[k] - before[k] for k in ("bytes_sent", "bytes_received")}
        tagged = {k: tag_after[k] - tag_before[k] for k in ("bytes_sent", "calls")}
        out[spec] = (t.tensors(), t.count, moved, tagged, t(ds.x_test[:5]))
    return out


_CACHE: dict = {}


def _fitted(world, split, secure=False):
    """One spawn of real agents per (world, split, secure), shared by the tests below (agents
    are slow to start on a loaded machine)."""
    key = (world, split, secure)
    if key not in _CACHE:
        _CACHE[key] = run_agents(_fit, world, SPECS, split, secure, timeout_s=600)
    return _CACHE[key]


def _reference(spec: str, x: np.ndarray):
    """numpy, float64, on all shards concatenated: the independent reference."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean = flat.mean(axis=0)
    if spec == "standardize":
        std = flat.std(axis=0)
        return {"shift": mean, "scale": np.where(std > 0, 1 / np.where(std > 0, std, 1), 1)}
    if spec == "minmax":
        lo, hi = flat.min(axis=0), flat.max(axis=0)
        rng = hi - lo
        return {"shift": lo, "scale": np.where(rng > 0, 1 / np.where(rng > 0, rng, 1), 1)}
    k = int(spec.split(":")[1])
    cov = np.cov(flat, rowvar=False, bias=True)
    values, vectors = np.linalg.eigh(cov)
    idx = np.argsort(values)[::-1][:k]
    vectors = vectors[:, idx]
    vectors = vectors * np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(k)])
    if spec.endswith("whiten"):
        vectors = vectors / np.sqrt(values[idx])
    return {"shift": mean, "scale": np.ones(flat.shape[1]), "components": vectors}


def _concatenated(split: str, world: int) -> np.ndarray:
    ds, parts = _shards(split, world)
    return ds.x_train.numpy()[np.concatenate(parts)]


@pytest.mark.parametrize("split", ["iid", "dirichlet:0.3"])
def test_joint_fit_equals_the_fit_on_concatenated_shards(split):
    world = 3
    results = _fitted(world, split)
    for spec in SPECS:
        ref = _reference(spec, _concatenated(split, world))
        first = results[0][spec][0]
        for name, value in ref.items():
            # float64 moments; eigenvectors of the float64 covariance (digits: 64 features).
            torch.testing.assert_close(
                first[name], torch.from_numpy(value), rtol=1e-6, atol=1e-8, msg=f"{spec} {name}"
            )
        for agent in results[1:]:  # every agent holds the identical transform, bit for bit
            tensors, applied = agent[spec][0], agent[spec][4]
            assert tensors.keys() == first.keys()
            assert all(torch.equal(tensors[k], first[k]) for k in first), spec
            assert torch.equal(applied, results[0][spec][4])
        if spec != "minmax":
            assert results[0][spec][1] == len(_concatenated(split, world))


@pytest.mark.parametrize("world", [2, 3])
def test_only_the_moments_cross_the_wire(world):
    results = _fitted(world, "dirichlet:0.3")
    d = 64
    for spec in SPECS:
        payload = payload_bytes(parse_preprocess(spec), d)
        for rank, agent in enumerate(results):
            _, _, moved, tagged, _ = agent[spec]
            expected = [ring_bytes("all_reduce", b, world, rank) for b in payload]
            sent = sum(s for s, _ in expected)
            received = sum(r for _, r in expected)
            # Everything the fit moved, on any tag, is the moment payload: nothing else left.
            assert moved == {"bytes_sent": sent, "bytes_received": received}, (spec, rank)
            assert tagged == {"bytes_sent": sent, "calls": len(payload)}
    # standardize on 64 features: count + mean + variance, 8 + 512 + 512 bytes.
    assert payload_bytes(parse_preprocess("standardize"), d) == [8, 512, 512]
    assert payload_bytes(parse_preprocess("pca:6"), d) == [8, 512, 8 * 64 * 65 // 2]


def test_secure_aggregation_masks_the_moments_and_refuses_minmax():
    world = 3
    results = _fitted(world, "dirichlet:0.3", True)
    for spec in ("standardize", "pca:6:whiten"):
        ref = _reference(spec, _concatenated("dirichlet:0.3", world))
        first = results[0][spec][0]
        # Each masked contribution is rounded to 24 fraction bits (6e-8): compare what was
        # summed — the mean, the variance (1/scale^2), the whitened components — at that scale.
        torch.testing.assert_close(first["shift"], torch.from_numpy(ref["shift"]), rtol=0,
                                   atol=1e-6)  # fmt: skip
        if spec == "standardize":
            torch.testing.assert_close(first["scale"] ** -2, torch.from_numpy(ref["scale"]) ** -2,
                                       rtol=1e-6, atol=1e-6)  # fmt: skip
        else:
            torch.testing.assert_close(first["components"], torch.from_numpy(ref["components"]),
                                       rtol=1e-4, atol=1e-6)  # fmt: skip
        for agent in results[1:]:
            assert all(torch.equal(agent[spec][0][k], first[k]) for k in first)
        # Masked int64 words are the size of float64: the same bytes as unmasked.
        plain = _fitted(world, "dirichlet:0.3")
        assert results[0][spec][2] == plain[0][spec][2]
    for agent in results:  # one line naming what secure aggregation cannot cover
        assert "minmax cannot run under security.secure_aggregation" in agent["minmax"]
