"""An independent, single-process replay of DiLoCo and streaming DiLoCo, and the library run it
is compared with (used by test_diloco_replay.py and test_periodic_dist.py).

The replay shares nothing with ``ddla.sync`` but the model, the data and torch's AdamW (the
inner optimizer, which is not ours): the fragment table, the schedule, the pseudo-gradient, the
mean over agents, the outer Nesterov update and the streaming merge are written out here from
the papers (Douillard et al. 2023, arXiv 2311.08105; 2025, arXiv 2501.18512):

    delta_t = mean_i (global_{t-1} - local_i)          # outer (pseudo-)gradient
    m_t     = mu * m_{t-1} + delta_t                   # m_0 = 0
    global_t = global_{t-1} - lr * (delta_t + mu * m_t)  # Nesterov

and every agent restarts from ``global_t`` (DiLoCo), or, with overlap tau > 0, keeps training
and tau steps later merges ``alpha * local + (1 - alpha) * global_t`` (streaming DiLoCo).
Fragment f of P syncs after every step s > 0 with ``s % H == f * H // P``.

With ``drift=True`` (``sync.drift=scaffold``, SCAFFOLD option II, Karimireddy et al. 2020,
arXiv 1910.06378, every client in every round), after every inner step of agent i

    local_i -= lr_inner * (c - c_i)                      # c = c_i = 0 at first

and at each sync, with S = lr_inner * (inner steps since the last sync) and d_i = global - local_i:

    c_i = c_i - c + d_i / S;   c = mean_i(d_i) / S
"""

from __future__ import annotations

import torch

from ddla.sync import SyncConfig, build_strategy

IN, HID, OUT = 6, 5, 3
INNER_LR = 0.01
#: The paper's outer settings, which the library must use when the run sets nothing.
OUTER_LR, OUTER_MOMENTUM, MIX = 0.7, 0.9, 0.5

# Rows of (W1 5x6, b1 5, W2 3x5, b2 3) per fragment, as (parameter index, first row, stop).
# P fragments of nearly equal value counts, cut along rows in parameter order (53 values).
FRAGMENT_TABLES: dict[int, list[list[tuple[int, int, int]]]] = {
    1: [[(0, 0, 5), (1, 0, 5), (2, 0, 3), (3, 0, 3)]],
    2: [[(0, 0, 5)], [(1, 0, 5), (2, 0, 3), (3, 0, 3)]],  # 30 | 23 values
    3: [[(0, 0, 3)], [(0, 3, 5), (1, 0, 5), (2, 0, 1)], [(2, 1, 3), (3, 0, 3)]],  # 18 | 22 | 13
}


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN, HID), torch.nn.ReLU(), torch.nn.Linear(HID, OUT))


def inner_step(model: torch.nn.Module, opt: torch.optim.Optimizer, rank: int, step: int) -> None:
    """One AdamW step on this agent's own batch (different data per rank and step)."""
    gen = torch.Generator().manual_seed(1000 * rank + step)
    x, y = torch.randn(8, IN, generator=gen), torch.randint(0, OUT, (8,), generator=gen)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def snapshot(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def run_library(transport, sync: SyncConfig, steps: int) -> dict[str, object]:
    """Train through the library's strategy; parameters after every step and after finish."""
    model = make_model()
    if transport.rank != 0:  # the strategy must start every agent from rank 0's parameters
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    opt = torch.optim.AdamW(model.parameters(), lr=INNER_LR)
    strategy = build_strategy(sync, transport=transport, model=model, optimizer=opt)
    history = []
    for step in range(1, steps + 1):
        inner_step(model, opt, transport.rank, step)
        history.append(snapshot(model))
    strategy.finish()
    strategy.close()
    fragments = [[(s.index, s.start, s.stop) for s in frag] for frag in strategy.fragments]
    return {"history": history, "final": snapshot(model), "fragments": fragments}


def replay(
    world: int,
    steps: int,
    *,
    every: int,
    fragments: int = 1,
    overlap: int = 0,
    alpha: float = MIX,
    drift: bool = False,
) -> list[dict[str, object]]:
    """The same run for ``world`` agents in one process, from the formulas above."""
    assert not drift or (fragments == 1 and overlap == 0)
    lr, mu = OUTER_LR, OUTER_MOMENTUM
    table = FRAGMENT_TABLES[fragments]
    models = [make_model() for _ in range(world)]  # all start from rank 0's parameters
    opts = [torch.optim.AdamW(m.parameters(), lr=INNER_LR) for m in models]
    local = [[p.detach() for p in m.parameters()] for m in models]  # views: writes go through
    glob = [p.clone() for p in local[0]]
    mom = [torch.zeros_like(g) for g in glob]  # one momentum per value; a fragment moves its own
    offsets = [f * every // fragments for f in range(fragments)]
    pending: dict[int, int] = {}  # fragment -> step after which its merge is due
    last = [0] * fragments
    c = [torch.zeros_like(g) for g in glob]  # drift: the shared control variate
    ci = [[torch.zeros_like(g) for g in glob] for _ in range(world)]  # and each agent's

    def outer(f: int, step: int) -> None:
        for i, a, b in table[f]:
            own = [glob[i][a:b] - local[r][i][a:b] for r in range(world)]
            delta = sum(own) / world
            mom[i][a:b] = mu * mom[i][a:b] + delta
            glob[i][a:b] -= lr * (delta + mu * mom[i][a:b])
            if drift:
                s = INNER_LR * (step - last[f])
                for r in range(world):
                    ci[r][i] = ci[r][i] - c[i] + own[r] / s
                c[i] = delta / s

    def merge(f: int, keep: float) -> None:
        for r in range(world):
            for i, a, b in table[f]:
                local[r][i][a:b] = keep * local[r][i][a:b] + (1 - keep) * glob[i][a:b]

    history: list[list[list[torch.Tensor]]] = [[] for _ in range(world)]
    with torch.no_grad():
        for step in range(1, steps + 1):
            for r in range(world):
                with torch.enable_grad():
                    inner_step(models[r], opts[r], r, step)
                if drift:
                    for i in range(len(glob)):
                        local[r][i] -= INNER_LR * (c[i] - ci[r][i])
            for f in range(fragments):
                if step % every == offsets[f]:
                    outer(f, step)
                    last[f] = step
                    if overlap == 0:
                        merge(f, 0.0)
                    else:
                        pending[f] = step + overlap
            for f, at in list(pending.items()):
                if at == step:
                    merge(f, alpha)
                    del pending[f]
            for r in range(world):
                history[r].append(snapshot(models[r]))
        # The end of the run: every fragment that trained since its sync syncs once more, a
        # result still in flight is applied whole, so every agent ends on the global copy.
        for f in range(fragments):
            if last[f] < steps:
                outer(f, steps)
                merge(f, 0.0)
            elif f in pending:
                merge(f, 0.0)
    return [
        {"history": history[r], "final": snapshot(models[r]), "fragments": table}
        for r in range(world)
    ]


#: (SyncConfig keywords, steps) covering DiLoCo and streaming DiLoCo at the default outer
#: settings: the outer step runs several times (momentum carries over), and streaming runs end
#: with a fragment still in flight, one that syncs in finish, and merges between syncs.
CASES: dict[str, tuple[dict[str, object], int]] = {
    "diloco": ({"strategy": "diloco", "every": 3}, 10),
    "streaming_p3_tau2": (
        {"strategy": "streaming_diloco", "every": 6, "fragments": 3, "overlap": 2},
        12,
    ),
    "streaming_p2_tau0": ({"strategy": "streaming_diloco", "every": 4, "fragments": 2}, 9),
    # DiLoCo's one-step-delayed outer update (the whole model as one fragment, tau = 1),
    # sent in the background (sync.background=auto turns it on with overlap > 0)
    "diloco_tau1": ({"strategy": "diloco", "every": 3, "overlap": 1}, 10),
    # SCAFFOLD's control variates in DiLoCo's inner loop (several rounds: c - c_i acts)
    "diloco_scaffold": ({"strategy": "diloco", "every": 3, "drift": "scaffold"}, 10),
    # alpha != 1/2, so that alpha and 1 - alpha cannot be confused
    "streaming_p2_tau1_mix0.2": (
        {"strategy": "streaming_diloco", "every": 4, "fragments": 2, "overlap": 1, "mix": 0.2},
        9,
    ),
}


def case_config(name: str) -> SyncConfig:
    kwargs, _ = CASES[name]
    return SyncConfig(**kwargs)  # type: ignore[arg-type]


def replay_case(name: str, world: int) -> list[dict[str, object]]:
    kwargs, steps = CASES[name]
    return replay(
        world,
        steps,
        every=int(kwargs["every"]),  # type: ignore[arg-type]
        fragments=int(kwargs.get("fragments", 1)),  # type: ignore[arg-type]
        overlap=int(kwargs.get("overlap", 0)),  # type: ignore[arg-type]
        alpha=float(kwargs.get("mix", MIX)),  # type: ignore[arg-type]
        drift=kwargs.get("drift", "none") == "scaffold",
    )


def assert_same_run(got: dict[str, object], want: dict[str, object], label: str) -> None:
    """Fragment table, parameters after every step, and after finish."""
    assert got["fragments"] == want["fragments"], label
    assert len(got["history"]) == len(want["history"]), label  # type: ignore[arg-type]
    for step, (g, w) in enumerate(zip(got["history"], want["history"], strict=True), start=1):  # type: ignore[call-overload]
        for i, (a, b) in enumerate(zip(g, w, strict=True)):
            torch.testing.assert_close(
                a, b, msg=lambda m, s=step, i=i: f"{label} step {s} param {i}: {m}"
            )
    for i, (a, b) in enumerate(zip(got["final"], want["final"], strict=True)):  # type: ignore[call-overload]
        torch.testing.assert_close(a, b, msg=lambda m, i=i: f"{label} after finish param {i}: {m}")
