"""Agents compare their configs over a real c10d TCPStore; every agent names the difference."""

from __future__ import annotations

import threading
from datetime import timedelta

import torch
import torch.distributed as dist

from ddla.comm.agree import agree_on_config, config_hash, shared_settings, state_sha256
from ddla.config import RunConfig
from ddla.errors import ConfigError


def _agree(configs: list[dict]) -> list[object]:
    """Run agree_on_config for every rank in a thread, each with its own store client."""
    server = dist.TCPStore("127.0.0.1", 0, None, True, timedelta(seconds=20))
    results: list[object] = [None] * len(configs)

    def agent(rank: int) -> None:
        store = dist.TCPStore("127.0.0.1", server.port, None, False, timedelta(seconds=20))
        try:
            results[rank] = agree_on_config(
                store, rank=rank, world_size=len(configs), config=configs[rank]
            )
        except ConfigError as exc:
            results[rank] = exc

    threads = [threading.Thread(target=agent, args=(r,)) for r in range(len(configs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _cfg(*overrides: str) -> dict:
    return RunConfig.load(None, ["data.dataset=digits", *overrides]).to_dict()


def test_same_config_agrees_and_machine_local_paths_do_not_count() -> None:
    configs = [_cfg("out=/a/run"), _cfg("out=/b/other", "data.root=/mnt/data", "tensorboard=true")]
    results = _agree(configs)
    assert results[0] == results[1] == config_hash(configs[0]) == config_hash(configs[1])
    assert "out" not in shared_settings(configs[0])


def test_every_agent_names_the_differing_settings() -> None:
    results = _agree([_cfg(), _cfg("train.steps=7", "sync.strategy=diloco"), _cfg()])
    for r in results:
        assert isinstance(r, ConfigError)
        assert "agent(s) 1 differ from agent 0" in str(r)
        assert "sync.strategy: 'allreduce' vs 'diloco'" in str(r)
        assert "train.steps: None vs 7" in str(r)  # None: the default budget
        assert r.help == "give every machine the same run file and --set options"


def test_state_hash_sees_values_names_and_dtypes() -> None:
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}
    assert state_sha256(a) == state_sha256({k: v.clone() for k, v in a.items()})
    assert state_sha256(a) != state_sha256({**a, "w": a["w"] + 1e-7})
    assert state_sha256(a) != state_sha256({"w2": a["w"], "b": a["b"]})
    assert state_sha256(a) != state_sha256({**a, "b": torch.zeros(3, dtype=torch.float64)})
