"""Robust rules against their definitions, written here independently (loops, numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddla.aggregate.robust import (
    bulyan,
    clip_norm,
    krum,
    median,
    multikrum,
    parse_rule,
    trimmed_mean,
)
from ddla.errors import ConfigError

U = torch.tensor(
    [[0.0, 1.0, -2.0], [0.5, 1.5, -1.0], [0.2, 0.9, -1.5], [9.0, -8.0, 7.0], [0.3, 1.2, -1.8],
     [0.1, 1.1, -1.2], [0.4, 0.8, -1.1]]
)  # fmt: skip


def _flower_krum(w: np.ndarray, f: int, keep: int) -> np.ndarray:
    # Flower's aggregate_krum, from its formula: squared distances, K-F-2 closest.
    k = len(w)
    d = np.array([[np.sum((w[i] - w[j]) ** 2) for j in range(k)] for i in range(k)])
    closest = max(1, k - f - 2)
    scores = [np.sum(np.sort(d[i])[1 : closest + 1]) for i in range(k)]
    best = np.argsort(scores, kind="stable")
    return w[best[0]] if keep <= 1 else w[best[:keep]].mean(axis=0)


def test_median_matches_numpy_median_even_and_odd() -> None:
    for k in (6, 7):
        torch.testing.assert_close(median(U[:k]), torch.from_numpy(np.median(U[:k].numpy(), 0)))


def test_trimmed_mean_by_hand() -> None:
    got = trimmed_mean(U, beta=0.2)  # floor(0.2*7) = 1 cut each end
    want = [sorted(col)[1:-1] for col in U.T.tolist()]
    torch.testing.assert_close(got, torch.tensor([sum(c) / len(c) for c in want]))
    with pytest.raises(ValueError, match="nothing is left"):
        trimmed_mean(U[:2], beta=0.5)


def test_krum_and_multikrum_match_flower_formula() -> None:
    w = U.double().numpy()
    torch.testing.assert_close(krum(U, f=1).double(), torch.from_numpy(_flower_krum(w, 1, 1)))
    torch.testing.assert_close(
        multikrum(U, f=1, m=3).double(), torch.from_numpy(_flower_krum(w, 1, 3))
    )
    assert not torch.equal(krum(U, f=1), U[3])  # the outlier is never chosen


def test_bulyan_by_definition() -> None:
    f, k = 1, len(U)
    theta, beta = k - 2 * f, k - 4 * f
    remaining, chosen = list(range(k)), []
    while len(chosen) < theta:
        sub = U[remaining].double().numpy()
        n = len(sub)
        scores = []
        for i in range(n):
            d = sorted(np.sum((sub[i] - sub[j]) ** 2) for j in range(n) if j != i)
            scores.append(sum(d[: max(1, n - f - 2)]))
        chosen.append(remaining.pop(int(np.argmin(scores))))
    sel = U[chosen].double().numpy()
    want = []
    for col in sel.T:
        med = np.median(col)
        want.append(np.mean(sorted(col, key=lambda v: abs(v - med))[:beta]))
    torch.testing.assert_close(bulyan(U, f=1).double(), torch.tensor(want, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 7"):
        bulyan(U[:6], f=1)


def test_clip_norm() -> None:
    u = torch.tensor([3.0, 4.0])
    torch.testing.assert_close(clip_norm(u, 1.0), torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(clip_norm(u, 10.0), u)


@pytest.mark.parametrize(
    "spec", ["nope", "median:1", "trimmed_mean", "trimmed_mean:0.5", "krum:x", "multikrum:1"]
)
def test_bad_rule_specs_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"fed\.aggregate"):
        parse_rule(spec)


def test_min_updates() -> None:
    assert parse_rule("krum:2").min_updates() == 7
    assert parse_rule("bulyan:1").min_updates() == 7
    assert not parse_rule("mean").robust
