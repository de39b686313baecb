"""Pure math of the DiLoCo family: pseudo-gradients, the outer Nesterov step, fragments."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ddla.errors import ConfigError
from ddla.sync.fragments import Slice, due_fragments, fragment_offsets, split_fragments
from ddla.sync.outer import average, build_outer_optimizer, mix, outer_step, pseudo_gradient


def test_outer_lr_one_no_momentum_is_model_averaging():
    gen = torch.Generator().manual_seed(0)
    anchor = [torch.randn(5, 3, generator=gen), torch.randn(3, generator=gen)]
    agents = [[a + torch.randn(a.shape, generator=gen) for a in anchor] for _ in range(4)]
    grads = [average([pseudo_gradient(anchor, ps)[i] for ps in agents]) for i in range(2)]
    opt = build_outer_optimizer(anchor, lr=1.0, momentum=0.0)
    outer_step(opt, anchor, grads)
    for i in range(2):
        torch.testing.assert_close(anchor[i], average([ps[i] for ps in agents]))


def test_outer_nesterov_matches_the_formula_over_two_rounds():
    lr, mu = 0.7, 0.9
    theta = torch.tensor([1.0, -2.0])
    anchor = [theta.clone()]
    opt = build_outer_optimizer(anchor, lr=lr, momentum=mu)
    assert opt.defaults["nesterov"] is True
    buf = torch.zeros(2)
    for g in (torch.tensor([0.5, 0.25]), torch.tensor([-1.0, 2.0])):
        buf = mu * buf + g
        theta = theta - lr * (g + mu * buf)
        outer_step(opt, anchor, [g])
        torch.testing.assert_close(anchor[0], theta)
        assert anchor[0].grad is None


def test_outer_step_on_a_fragment_leaves_others_and_their_momentum_alone():
    anchor = [torch.ones(2), torch.ones(3)]
    opt = build_outer_optimizer(anchor, lr=0.5, momentum=0.9)
    outer_step(opt, anchor[:1], [torch.ones(2)])
    assert torch.equal(anchor[1], torch.ones(3))
    assert anchor[1] not in opt.state or not opt.state[anchor[1]]
    assert "momentum_buffer" in opt.state[anchor[0]]


def test_mix():
    local = torch.tensor([2.0, 4.0])
    mix(local, torch.tensor([0.0, 0.0]), 0.5)
    assert local.tolist() == [1.0, 2.0]


SHAPE_SETS = [
    [(784, 64), (64,), (64, 10), (10,)],
    [(3, 3), (), (5, 2, 2), (0, 4), (7,)],
    [(100, 1)],
]


@pytest.mark.parametrize("shapes", SHAPE_SETS)
@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_fragments_cover_every_row_once_in_order_and_balance(shapes, parts):
    frags = split_fragments(shapes, parts)
    assert len(frags) == parts
    flat = [s for f in frags for s in f]
    covered: dict[int, int] = {}
    for s in flat:
        assert s.start == covered.get(s.index, 0), "rows are contiguous and in order"
        covered[s.index] = s.stop
    for i, shape in enumerate(shapes):
        if math.prod(shape):
            assert covered[i] == (shape[0] if shape else 1)
    sizes = []
    for f in frags:
        size = 0
        for s in f:
            t = torch.zeros(shapes[s.index])
            size += s.view(t).numel()
        sizes.append(size)
    widest = max(math.prod(s[1:]) if s else 1 for s in shapes)
    assert sum(sizes) == sum(math.prod(s) for s in shapes)
    assert max(sizes) - min(sizes) <= 2 * widest


def test_slice_view_writes_through():
    p = torch.zeros(4, 2)
    Slice(0, 1, 3).view(p).fill_(1.0)
    assert p.sum() == 4
    s = torch.zeros(())
    Slice(0, 0, 1).view(s).fill_(2.0)
    assert s.item() == 2.0


def test_too_many_fragments_is_a_config_error():
    with pytest.raises(ConfigError, match=r"sync.fragments=5") as info:
        split_fragments([(2, 3), (2,)], 5)
    assert info.value.help


@pytest.mark.parametrize("every, parts", [(10, 1), (10, 3), (100, 4), (7, 7)])
def test_each_fragment_syncs_once_per_period_at_its_offset(every, parts):
    offsets = fragment_offsets(every=every, fragments=parts)
    assert len(set(offsets)) == parts and offsets[0] == 0
    seen: dict[int, list[int]] = {f: [] for f in range(parts)}
    for step in range(0, 3 * every + 1):
        for f in due_fragments(step=step, every=every, fragments=parts):
            seen[f].append(step)
    for f, steps in seen.items():
        assert all(b - a == every for a, b in itertools.pairwise(steps))
        assert steps[0] == (offsets[f] or every)
    if parts == 1:
        assert seen[0] == [every, 2 * every, 3 * every]
