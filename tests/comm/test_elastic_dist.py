"""A periodic strategy survives a killed or stopped agent over real gloo agents, and a
restarted agent rejoins by pulling the state from a live peer (ddla/comm/elastic.py).

The survivors' parameters are compared with an independent single-process replay of DiLoCo
(the formulas of tests/sync/diloco_replay.py) in which the lost agent stops contributing at
the first synchronization after its death, and a rejoined one restarts from the global copy
with its source's inner optimizer state.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
import torch

from ddla.comm import Transport
from ddla.comm.elastic import ElasticGroup
from ddla.errors import CommTimeoutError
from ddla.sync import SyncConfig, build_strategy
from ddla.testing import AgentExit, FaultInjector, run_agents
from tests.sync.diloco_replay import (
    INNER_LR,
    OUTER_LR,
    OUTER_MOMENTUM,
    inner_step,
    make_model,
    snapshot,
)

pytestmark = pytest.mark.dist

WORLD, EVERY, STEPS = 3, 3, 12
TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 4.0
SYNC = SyncConfig(strategy="diloco", every=EVERY)


def _loop(model, opt, strategy, rank, first, faults, history, *, wait_join=None, store=None):
    for step in range(first, STEPS + 1):
        if wait_join is not None and step == wait_join[1] and store is not None:
            # Hold the survivors until the restarted agent asked to rejoin, so that it is
            # admitted at a known synchronization (the replay's).
            store.wait([f"elastic/join/{wait_join[0]}"], timedelta(seconds=120))
        inner_step(model, opt, rank, step)
        history[step] = snapshot(model)
        if faults is not None:
            faults.apply(rank, step)
    strategy.finish()
    strategy.close()


def _agent(
    transport: Transport, faults: FaultInjector, wait_join=None, comm_timeout_s=TIMEOUT_S
) -> dict[str, Any]:
    # A survivor that is not the dead agent's neighbour in gloo's ring notices by the timeout.
    transport.timeout_s = comm_timeout_s
    rank = transport.rank
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=INNER_LR)
    strategy = build_strategy(SYNC, transport=transport, model=model, optimizer=opt)
    group = ElasticGroup(transport, store=transport.store, run_world=WORLD, interval_s=0.2)
    group.attach(strategy)
    history: dict[int, list[torch.Tensor]] = {}
    try:
        _loop(model, opt, strategy, rank, 1, faults, history, wait_join=wait_join,
              store=transport.store)  # fmt: skip
    finally:
        group.close()
    return {"history": history, "final": snapshot(model), "summary": group.summary(),
            "members": group.members}  # fmt: skip


def _restarted(store: Any, rank: int, world: int, faults: FaultInjector, wait_join=None):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=INNER_LR)
    base = Transport.single(timeout_s=30)
    strategy = build_strategy(SYNC, transport=base, model=model, optimizer=opt)
    group = ElasticGroup.rejoin(
        store, rank=rank, run_world=world, wait_s=120, base=base, interval_s=0.2
    )
    group.attach(strategy)
    state = group.pull()
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    strategy.load_state_dict(state["strategy"])
    history: dict[int, list[torch.Tensor]] = {}
    try:
        _loop(model, opt, strategy, rank, int(state["step"]) + 1, None, history)
    finally:
        group.close()
    return {"history": history, "final": snapshot(model), "summary": group.summary(),
            "start": int(state["step"]), "members": group.members}  # fmt: skip


def replay(dead: dict[int, int], rejoin: dict[int, int] | None = None) -> list[dict[str, Any]]:
    """DiLoCo for WORLD agents in one process; agent r stops after step dead[r] and (with
    ``rejoin``) comes back at the synchronization of step rejoin[r] with the global copy and
    the inner optimizer state of the lowest live agent."""
    rejoin = rejoin or {}
    lr, mu = OUTER_LR, OUTER_MOMENTUM
    models = [make_model() for _ in range(WORLD)]
    opts = [torch.optim.AdamW(m.parameters(), lr=INNER_LR) for m in models]
    local = [[p.detach() for p in m.parameters()] for m in models]
    glob = [p.clone() for p in local[0]]
    mom = [torch.zeros_like(g) for g in glob]
    history: list[dict[int, list[torch.Tensor]]] = [{} for _ in range(WORLD)]

    def alive(r: int, step: int) -> bool:
        return r not in dead or step <= dead[r] or (r in rejoin and step > rejoin[r])

    def sync(step: int, live: list[int]) -> None:
        delta = [sum(glob[i] - local[r][i] for r in live) / len(live) for i in range(len(glob))]
        for i, d in enumerate(delta):
            mom[i].mul_(mu).add_(d)
            glob[i] -= lr * (d + mu * mom[i])
        for r in live:
            for i in range(len(glob)):
                local[r][i].copy_(glob[i])

    with torch.no_grad():
        for step in range(1, STEPS + 1):
            live = [r for r in range(WORLD) if alive(r, step)]
            for r in live:
                with torch.enable_grad():
                    inner_step(models[r], opts[r], r, step)
            if step % EVERY == 0 or step == STEPS:
                sync(step, live)
            for r in live:  # the library's snapshot follows the step's synchronization
                history[r][step] = snapshot(models[r])
            for r, at in rejoin.items():
                if at == step:
                    source = min(live)
                    opts[r].load_state_dict(copy.deepcopy(opts[source].state_dict()))
                    for i in range(len(glob)):
                        local[r][i].copy_(glob[i])
    return [{"history": history[r], "final": snapshot(models[r])} for r in range(WORLD)]


def _assert_agent(got: dict[str, Any], want: dict[str, Any], label: str) -> None:
    for step, params in got["history"].items():
        for i, (a, b) in enumerate(zip(params, want["history"][step], strict=True)):
            torch.testing.assert_close(a, b, msg=lambda m, s=step, i=i: f"{label} {s}/{i}: {m}")
    for a, b in zip(got["final"], want["final"], strict=True):
        torch.testing.assert_close(a, b, msg=lambda m: f"{label} final: {m}")


@pytest.mark.parametrize("dead", [0, 1, 2], ids=["rank0", "middle", "last"])
def test_survivors_of_a_killed_agent_match_the_replay(dead: int) -> None:
    kill_at = 4  # between the syncs of steps 3 and 6: the survivors notice at step 6
    faults = FaultInjector().kill(rank=dead, at_step=kill_at)
    results = run_agents(_agent, WORLD, faults, allow_exit={dead}, timeout_s=300)
    assert isinstance(results[dead], AgentExit)
    want = replay({dead: kill_at})
    survivors = [r for r in range(WORLD) if r != dead]
    for r in survivors:
        _assert_agent(results[r], want[r], f"agent {r}")
        assert results[r]["members"] == survivors
        (event,) = results[r]["summary"]["faults"]
        assert (event["agent"], event["step"], event["kind"]) == (dead, 6, "killed")
        assert event["agents_after"] == survivors and event["steps_lost"] == 3
    # survivors agree bitwise
    a, b = (results[r]["final"] for r in survivors)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_stopped_agent_is_left_behind_within_the_timeout() -> None:
    faults = FaultInjector().stop(rank=1, at_step=4)  # SIGSTOP: alive, silent
    # run_agents kills the frozen agent once the others returned (it is in allow_exit).
    results = run_agents(
        _agent, WORLD, faults, allow_exit={1}, timeout_s=300, comm_timeout_s=STOP_TIMEOUT_S
    )
    assert isinstance(results[1], AgentExit)
    want = replay({1: 4})
    for r in (0, 2):
        _assert_agent(results[r], want[r], f"agent {r}")
        (event,) = results[r]["summary"]["faults"]
        assert (event["agent"], event["step"], event["kind"]) == (1, 6, "timed out")
        # noticed by the timeout, not before, and not long after (slack for a busy machine)
        assert STOP_TIMEOUT_S - 0.5 <= event["detect_s"] <= STOP_TIMEOUT_S + 30


def test_a_restarted_agent_rejoins_with_the_others_parameters() -> None:
    faults = FaultInjector().kill(rank=1, at_step=4)
    results = run_agents(_agent, WORLD, faults, (1, 7), restart={1: _restarted}, timeout_s=300)
    joined = results[1]
    assert joined["start"] == 9 and joined["members"] == [0, 1, 2]
    want = replay({1: 4}, rejoin={1: 9})
    for r in range(WORLD):
        _assert_agent(results[r], want[r], f"agent {r}")
    # right after its first sync (step 12, the last) it holds exactly the others' parameters
    for r in (0, 2):
        assert all(
            torch.equal(x, y) for x, y in zip(results[r]["final"], joined["final"], strict=True)
        )
    kinds = [(e["agent"], e["step"], e["kind"]) for e in results[0]["summary"]["faults"]]
    assert kinds == [(1, 6, "killed"), (1, 9, "rejoined")]
    # The newcomer carries the run's fault history (agent 0 coming back writes the summary
    # as the new rank 0), and the heal's size as the source sent it and it received it.
    mine = [(e["agent"], e["step"], e["kind"]) for e in joined["summary"]["faults"]]
    assert mine == kinds
    sent = results[0]["summary"]["faults"][1]["heal_bytes"]
    assert sent > 0 and joined["summary"]["faults"][1]["heal_bytes"] == sent
    assert results[2]["summary"]["faults"][1]["heal_bytes"] == 0  # neither sent nor received


def test_a_rejoin_nobody_admits_fails_in_one_line() -> None:
    import torch.distributed as dist

    store = dist.HashStore()
    group = ElasticGroup.rejoin(store, rank=1, run_world=2, wait_s=0.5)
    try:
        with pytest.raises(CommTimeoutError, match=r"no live agent admitted it within 0\.5 s"):
            group.pull()
        assert not store.check(["elastic/join/1"])  # the request is withdrawn
    finally:
        group.close()
