"""An independent single-process replay of the FedAvg family, written from the papers'
formulas with plain tensors (a functional MLP, per-parameter lists, Python loops over clients),
to check the federated Compute run over real gloo agents against.

Only the data order is shared with ddla (which clients a round samples, each client's
minibatch order): those choose *what* is computed, and their own tests check them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ddla.fed import client_batches, sample_clients

Params = list[torch.Tensor]


@dataclass
class Setting:
    """One replayed run: the strategy and the numbers the formulas use."""

    strategy: str
    rounds: int = 3
    fraction: float = 0.4
    epochs: int = 2
    batch: int = 16
    lr: float = 0.1
    server_lr: float = 1.0
    mu: float = 0.0
    momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    seed: int = 0
    extra: dict = field(default_factory=dict)


def forward(params: Params, x: torch.Tensor) -> torch.Tensor:
    """The MLP Linear-ReLU-Linear(-ReLU-Linear...) as functional calls."""
    h = x
    for i in range(0, len(params), 2):
        h = F.linear(h, params[i], params[i + 1])
        if i + 2 < len(params):
            h = F.relu(h)
    return h


def _local(
    params: Params, x, y, idx, s: Setting, r: int, c: int, corr: Params | None
) -> tuple[Params, int]:
    """Client c's local SGD: E epochs of minibatch B; FedProx adds (mu/2)||w - w0||^2 to the
    loss (autograd differentiates it); SCAFFOLD adds corr = c - c_i to the gradient."""
    w0 = [p.detach().clone() for p in params]
    w = [p.detach().clone().requires_grad_(True) for p in params]
    steps = 0
    for e in range(s.epochs):
        for b in client_batches(idx, batch=s.batch, epoch=e, round_=r, client=c, seed=s.seed):
            bi = torch.from_numpy(b)
            loss = F.cross_entropy(forward(w, x[bi]), y[bi])
            if s.mu:
                loss = loss + s.mu / 2 * sum(
                    ((a - a0) ** 2).sum() for a, a0 in zip(w, w0, strict=True)
                )
            grads = torch.autograd.grad(loss, w)
            with torch.no_grad():
                for i, g in enumerate(grads):
                    g = g + corr[i] if corr is not None else g
                    w[i] -= s.lr * g
            steps += 1
    return [a.detach() for a in w], steps


def replay(init: Params, x, y, clients: list[np.ndarray], s: Setting) -> Params:
    """The global model after ``s.rounds`` rounds of ``s.strategy``."""
    w = [p.clone() for p in init]
    m_clients = len(clients)
    zeros = [torch.zeros_like(p) for p in w]
    vel, m = [z.clone() for z in zeros], [z.clone() for z in zeros]
    v = [torch.full_like(p, s.tau**2) for p in w]
    c_server = [z.clone() for z in zeros]
    c_client: dict[int, Params] = {}
    for r in range(s.rounds):
        sampled = sample_clients(round_=r, clients=m_clients, fraction=s.fraction, seed=s.seed)
        deltas, weights, dcs = [], [], []
        for c in sampled.tolist():
            ci = c_client.get(c, zeros)
            corr = (
                [a - b for a, b in zip(c_server, ci, strict=True)]
                if s.strategy == "scaffold"
                else None
            )
            wk, k = _local(w, x, y, clients[c], s, r, c, corr)
            delta = [a - b for a, b in zip(wk, w, strict=True)]
            deltas.append(delta)
            weights.append(1.0 if s.strategy == "scaffold" else float(len(clients[c])))
            if s.strategy == "scaffold":  # option II
                ci_new = [
                    a - b - d / (k * s.lr) for a, b, d in zip(ci, c_server, delta, strict=True)
                ]
                dcs.append([a - b for a, b in zip(ci_new, ci, strict=True)])
                c_client[c] = ci_new
        tw = sum(weights)
        agg = [
            sum(wt * d[i] for wt, d in zip(weights, deltas, strict=True)) / tw
            for i in range(len(w))
        ]
        if s.strategy == "fedavgm":
            vel = [s.momentum * a + g for a, g in zip(vel, agg, strict=True)]
            w = [p + s.server_lr * a for p, a in zip(w, vel, strict=True)]
        elif s.strategy in ("fedadam", "fedyogi"):
            m = [s.beta1 * a + (1 - s.beta1) * g for a, g in zip(m, agg, strict=True)]
            if s.strategy == "fedadam":
                v = [s.beta2 * a + (1 - s.beta2) * g * g for a, g in zip(v, agg, strict=True)]
            else:
                v = [
                    a - (1 - s.beta2) * g * g * torch.sign(a - g * g)
                    for a, g in zip(v, agg, strict=True)
                ]
            w = [p + s.server_lr * a / (b.sqrt() + s.tau) for p, a, b in zip(w, m, v, strict=True)]
        elif s.strategy == "scaffold":
            n = len(sampled)
            mean_dc = [sum(d[i] for d in dcs) / n for i in range(len(w))]
            c_server = [a + n / m_clients * b for a, b in zip(c_server, mean_dc, strict=True)]
            w = [p + s.server_lr * a for p, a in zip(w, agg, strict=True)]
        else:  # fedavg, fedprox
            w = [p + s.server_lr * a for p, a in zip(w, agg, strict=True)]
    s.extra["c_server"] = c_server
    s.extra["c_client"] = c_client
    return w
