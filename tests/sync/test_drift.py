"""``sync.drift=scaffold`` in one process: the control-variate math, the inner-step correction,
a one-agent run (no drift to correct: exactly DiLoCo) and the combinations refused."""

from __future__ import annotations

import pytest
import torch

from ddla.comm import Transport
from ddla.errors import ConfigError
from ddla.sync import SyncConfig, build_strategy
from ddla.sync.drift import DriftCorrection, update_variates


def test_variates_follow_scaffold_option_two():
    """c_i+ = c_i - c + d_i / S and c+ = mean / S; with exact means, c stays mean_i(c_i)."""
    world, s = 3, 0.5
    ci = [[torch.tensor([0.1 * r, -0.2])] for r in range(world)]
    c = [sum(x[0] for x in ci) / world]
    deltas = [[torch.tensor([1.0 + r, 2.0 * r])] for r in range(world)]
    mean = [sum(d[0] for d in deltas) / world]
    new = [update_variates(ci[r], c, delta=deltas[r], mean=mean, lr_sum=s) for r in range(world)]
    for r in range(world):
        torch.testing.assert_close(new[r][0][0], ci[r][0] - c[0] + deltas[r][0] / s)
        torch.testing.assert_close(new[r][1][0], mean[0] / s)
    torch.testing.assert_close(sum(n[0][0] for n in new) / world, new[0][1][0])


def test_inner_steps_are_corrected_by_c_minus_ci_times_each_steps_lr():
    p = torch.nn.Parameter(torch.zeros(2))
    group = {"lr": 0.1}
    d = DriftCorrection([p.detach()], [group])
    d.inner_step()  # round one: nothing learnt yet, nothing corrected
    assert torch.equal(p.detach(), torch.zeros(2))
    group["lr"] = 0.3  # a schedule: S is the sum of the round's learning rates
    d.inner_step()
    d.after_sync([torch.tensor([0.8, 0.0])], [torch.tensor([0.4, 0.4])])  # S = 0.4
    torch.testing.assert_close(d.local[0], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(d.global_[0], torch.tensor([1.0, 1.0]))
    d.inner_step()  # p -= 0.3 * (c - c_i) = 0.3 * [-1, 1]
    torch.testing.assert_close(p.detach(), torch.tensor([0.3, -0.3]))
    assert d.lr_sum == [0.3]
    state = d.state_dict()
    e = DriftCorrection([torch.zeros(2)], [group])
    e.load_state_dict(state)
    assert e.correction is not None and torch.equal(e.correction[0], d.correction[0])


def _run(sync: SyncConfig, steps: int = 9) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    with Transport.single() as transport:
        strategy = build_strategy(sync, transport=transport, model=model, optimizer=opt)
        for step in range(steps):
            gen = torch.Generator().manual_seed(step)
            x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        strategy.finish()
        assert strategy.drift is not None or sync.drift == "none"
        strategy.close()
    return [p.detach().clone() for p in model.parameters()]


def test_one_agent_has_no_drift_and_runs_plain_diloco():
    plain = _run(SyncConfig(strategy="diloco", every=3))
    corrected = _run(SyncConfig(strategy="diloco", every=3, drift="scaffold"))
    for a, b in zip(plain, corrected, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategy": "streaming_diloco"}, "does not apply to sync.strategy=streaming_diloco"),
        ({"strategy": "allreduce"}, "does not apply to sync.strategy=allreduce"),
        ({"strategy": "fedavg"}, "does not apply"),
        ({"strategy": "diloco", "every": 10, "overlap": 1}, "needs the mean at the sync step"),
        ({"strategy": "diloco", "background": "always"}, "needs the mean at the sync step"),
        ({"strategy": "diloco", "drift": "prox"}, "unknown sync.drift value"),
    ],
)
def test_combinations_that_cannot_hold_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SyncConfig(**{"drift": "scaffold", **kwargs})
