"""local SGD, DiLoCo and streaming DiLoCo over real gloo agents: DiLoCo at its default settings
against the independent replay in diloco_replay.py, equivalences, agreement after every sync
with every compressor, checkpoint round trip."""

from __future__ import annotations

import copy

import pytest
import torch

from ddla.comm import Transport
from ddla.sync import STRATEGIES, SyncConfig, build_strategy
from ddla.sync.fragments import due_fragments
from ddla.testing import run_agents
from tests.sync.diloco_replay import CASES, assert_same_run, case_config, replay_case, run_library

IN, HID, OUT = 6, 5, 3
WORLD = 3
#: Replayed over gloo: DiLoCo and streaming DiLoCo with tau > 0 (the rest with one agent).
DIST_CASES = ("diloco", "streaming_p3_tau2", "diloco_scaffold")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.ReLU(), torch.nn.Linear(HID, OUT))


def _batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(8, IN, generator=gen), torch.randint(0, OUT, (8,), generator=gen)


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _train(transport, sync: SyncConfig, steps: int, *, optim: str = "sgd", snapshots=None):
    """Train the tiny model; optionally snapshot parameters after each step that synced."""
    model = _model()
    if optim == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    strategy = build_strategy(sync, transport=transport, model=model, optimizer=opt)
    for step in range(1, steps + 1):
        x, y = _batch(transport.rank, step)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(strategy.train_model(x), y).backward()
        opt.step()
        if snapshots is not None and sync.strategy != "allreduce":
            parts = sync.fragments if sync.strategy == "streaming_diloco" else 1
            due = due_fragments(step=step, every=sync.every, fragments=parts)
            if due and sync.overlap == 0:
                snapshots.append((step, due, _params(model)))
    strategy.finish()
    strategy.close()
    return model, opt, strategy


COMPRESSORS = ["none", "fp16", "int8", "int4", "topk:0.2", "powersgd:1", "topk:0.3+int8", "sign:8"]
FEW = ["none", "int4", "powersgd:1+int8"]  # the other strategies share DiLoCo's sync code
STRATEGY_CONFIGS = [
    ({"strategy": "local_sgd", "every": 3}, FEW),
    ({"strategy": "diloco", "every": 3}, COMPRESSORS),
    ({"strategy": "diloco", "every": 3, "drift": "scaffold"}, ["none", "int4", "sign:8"]),
    ({"strategy": "streaming_diloco", "every": 4, "fragments": 2}, FEW),
    ({"strategy": "streaming_diloco", "every": 4, "fragments": 3, "overlap": 1}, FEW),
]


def _agent(transport: Transport) -> dict[str, object]:
    out: dict[str, object] = {}
    steps = 7
    # 1. local_sgd with H=1 under plain SGD equals allreduce.
    out["allreduce"] = _params(_train(transport, SyncConfig(strategy="allreduce"), steps)[0])
    out["local_sgd_h1"] = _params(
        _train(transport, SyncConfig(strategy="local_sgd", every=1), steps)[0]
    )
    # 1b. allreduce with a compressed DDP hook: agents agree; fp16 stays close to fp32.
    for spec in ["fp16", "int8", "topk:0.3", "powersgd:1"]:
        cfg = SyncConfig(strategy="allreduce", compress=spec)
        out[f"allreduce|{spec}"] = _params(_train(transport, cfg, steps)[0])
    # 2. diloco with outer lr 1 and no momentum equals local_sgd (same inner AdamW).
    d = SyncConfig(strategy="diloco", every=3, outer_lr=1.0, outer_momentum=0.0)
    out["diloco_lr1"] = _params(_train(transport, d, steps, optim="adamw")[0])
    ls = SyncConfig(strategy="local_sgd", every=3)
    out["local_sgd_h3"] = _params(_train(transport, ls, steps, optim="adamw")[0])
    # 3. every strategy x compressor: snapshots after each sync, and the final parameters.
    for cfg, specs in STRATEGY_CONFIGS:
        for spec in specs:
            snaps: list = []
            model, _, strategy = _train(
                transport, SyncConfig(**cfg, compress=spec), steps, optim="adamw", snapshots=snaps
            )
            key = f"{cfg}|{spec}"
            out[key] = (snaps, _params(model), [[s for s in f] for f in strategy.fragments])
    # 4. checkpoint: stop at step 4, rebuild from state dicts, continue to 8 == straight 8.
    out["resume"] = _resume(
        transport, SyncConfig(strategy="diloco", every=3, compress="topk:0.3+int8")
    )
    # (with drift correction: the control variates and sign's residuals are in the state)
    out["resume_drift"] = _resume(
        transport, SyncConfig(strategy="diloco", every=3, compress="sign:8", drift="scaffold")
    )
    # 5. DiLoCo and streaming DiLoCo (tau > 0) at the default outer settings, for the replay.
    out["replay"] = {
        name: run_library(transport, case_config(name), CASES[name][1]) for name in DIST_CASES
    }
    return out


def _resume(
    transport: Transport, sync: SyncConfig
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    def run(model, opt, strategy, start, stop):
        for step in range(start, stop):
            x, y = _batch(transport.rank, step)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    def fresh(saved=None):
        # As the agent does on resume: the strategy first (its construction broadcasts rank
        # 0's fresh parameters), then the model, inner optimizer and strategy state.
        model = _model()
        opt = torch.optim.AdamW(model.parameters(), lr=0.01)
        strategy = build_strategy(sync, transport=transport, model=model, optimizer=opt)
        if saved is not None:
            model.load_state_dict(saved[0])
            opt.load_state_dict(saved[1])
            strategy.load_state_dict(saved[2])
        return model, opt, strategy

    m1, o1, s1 = fresh()
    run(m1, o1, s1, 1, 9)
    m2, o2, s2 = fresh()
    run(m2, o2, s2, 1, 5)
    saved = copy.deepcopy((m2.state_dict(), o2.state_dict(), s2.state_dict()))
    s2.close()
    m3, o3, s3 = fresh(saved)
    run(m3, o3, s3, 5, 9)
    return _params(m1), _params(m3)


@pytest.fixture(scope="module")
def three_agents() -> list[dict[str, object]]:
    """One spawn of three gloo agents serves every test of this module (spawning is slow)."""
    return run_agents(_agent, WORLD, timeout_s=540)


@pytest.mark.dist
@pytest.mark.timeout(600)  # the spawn takes minutes on a loaded 2-core machine
def test_diloco_at_default_settings_matches_the_replay_on_every_agent(three_agents):
    """Ranks start from different parameters, so the initial broadcast is checked too."""
    for name in DIST_CASES:
        want = replay_case(name, world=WORLD)
        for rank in range(WORLD):
            assert_same_run(three_agents[rank]["replay"][name], want[rank], f"{name} rank {rank}")


@pytest.mark.dist
@pytest.mark.timeout(600)
def test_periodic_strategies_over_three_agents(three_agents):
    results = three_agents
    r0 = results[0]
    for a, b in zip(r0["local_sgd_h1"], r0["allreduce"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(r0["diloco_lr1"], r0["local_sgd_h3"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for spec in ["fp16", "int8", "topk:0.3", "powersgd:1"]:
        key = f"allreduce|{spec}"
        for r in results[1:]:
            for a, b in zip(r[key], r0[key], strict=True):
                assert torch.equal(a, b), key
        if spec == "fp16":
            for a, b in zip(r0[key], r0["allreduce"], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)
    for cfg, specs in STRATEGY_CONFIGS:
        for spec in specs:
            key = f"{cfg}|{spec}"
            snaps0, final0, fragments = r0[key]
            if cfg.get("overlap", 0) == 0:
                assert snaps0, key
            for r in results[1:]:
                snaps, final, _ = r[key]
                for a, b in zip(final, final0, strict=True):  # after finish: all identical
                    assert torch.equal(a, b), key
                for (step, due, ps), (step0, due0, ps0) in zip(snaps, snaps0, strict=True):
                    assert (step, due) == (step0, due0)
                    for f in due:  # the synced fragment is identical right after its sync
                        for sl in fragments[f]:
                            assert torch.equal(sl.view(ps[sl.index]), sl.view(ps0[sl.index])), (
                                key,
                                step,
                            )
            # and the agents did not just stay at the initial point
            init = _params(_model())
            assert any(not torch.allclose(a, b) for a, b in zip(final0, init, strict=True)), key
    for r in results:
        for key in ("resume", "resume_drift"):
            straight, resumed = r[key]
            for a, b in zip(straight, resumed, strict=True):
                assert torch.equal(a, b), key


def _plain_training(steps: int) -> list[torch.Tensor]:
    """Rank 0's run with no strategy at all: what one agent of allreduce or local SGD must do."""
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for step in range(1, steps + 1):
        x, y = _batch(0, step)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return _params(model)


def test_one_agent_runs_every_strategy_without_communication():
    # DiLoCo and streaming DiLoCo with one agent are checked against a replay of their outer
    # step in test_diloco_replay.py; here: nothing is sent, so the compressor never touches
    # the update, and the strategies without an outer optimizer are plain training.
    plain = _plain_training(5)
    with Transport.single() as transport:
        for name in STRATEGIES:
            runs = {}
            for spec in ["none", "int4", "powersgd:1"]:
                cfg = SyncConfig(strategy=name, every=2, fragments=2, compress=spec)
                runs[spec] = _params(_train(transport, cfg, 5, optim="adamw")[0])
            for spec in ["int4", "powersgd:1"]:
                for a, b in zip(runs[spec], runs["none"], strict=True):
                    assert torch.equal(a, b), (name, spec)
            if name in ("allreduce", "local_sgd"):
                for a, b in zip(runs["none"], plain, strict=True):
                    torch.testing.assert_close(a, b, msg=lambda m, n=name: f"{n}: {m}")
        assert transport.stats.totals()["bytes_sent"] == 0


def test_diloco_family_defaults_to_adamw_and_local_sgd_to_sgd():
    assert STRATEGIES["diloco"].default_optimizer == "adamw"
    assert STRATEGIES["streaming_diloco"].default_optimizer == "adamw"
    assert STRATEGIES["local_sgd"].default_optimizer == "sgd"
