"""Agents on different machines must run one config: compare it over the rendezvous store.

Each machine reads its own run file, so two of them can disagree (an edited copy, a missing
``--set``); nothing else would notice until results are wrong or a collective hangs. Every
agent publishes its config and a hash of it in the c10d Store, reads everyone's, and all of
them fail with the same line naming the settings that differ. Settings that are local to a
machine (where it writes, where its files are) are left out.

Example::

    agree_on_config(transport.store, rank=0, world_size=2, config=cfg.to_dict())
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from ddla.errors import ConfigError

#: Per-machine settings: paths on that machine and what it writes for itself.
LOCAL_KEYS = ("out", "tensorboard", "data.root", "security.secret_file", "security.policy")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def shared_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings every agent must agree on (flat ``a.b`` keys, local ones removed)."""
    return {k: v for k, v in _flatten(config).items() if k not in LOCAL_KEYS}


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the shared settings (stable across machines and Python versions)."""
    text = json.dumps(shared_settings(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def agree_on_config(store: Any, *, rank: int, world_size: int, config: dict[str, Any]) -> str:
    """Publish this agent's config, check everyone's matches rank 0's; return the hash.

    Raises ConfigError on every agent when any disagrees, naming the settings and values.
    Blocks (bounded by the store's timeout) until every agent has published.
    """
    mine = shared_settings(config)
    digest = config_hash(config)
    store.set(f"config/{rank}", json.dumps({"sha256": digest, "settings": mine}, default=str))
    records = [json.loads(store.get(f"config/{r}")) for r in range(world_size)]
    reference = records[0]
    odd = [r for r, rec in enumerate(records) if rec["sha256"] != reference["sha256"]]
    if not odd:
        return digest
    first = records[odd[0]]["settings"]
    ref = reference["settings"]
    keys = sorted(k for k in set(ref) | set(first) if ref.get(k) != first.get(k))
    shown = "; ".join(f"{k}: {ref.get(k)!r} vs {first.get(k)!r}" for k in keys[:5])
    more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
    raise ConfigError(
        f"the agents do not run the same config: agent(s) {', '.join(map(str, odd))} differ "
        f"from agent 0 in {shown}{more}",
        help="give every machine the same run file and --set options",
    )


def state_sha256(state: dict[str, Any]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes: equal states, equal hash.

    Every agent logs the hash of the final merged model, so machines that each kept their own
    logs can be compared (``grep 'final model' OUT/logs/agent*.log`` on each).
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
