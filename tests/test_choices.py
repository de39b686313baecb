"""Choice-valued settings are validated from their one declaration, with the same error text."""

from __future__ import annotations

import pytest

from ddla.choices import allowed
from ddla.comm.config import CommConfig
from ddla.config import RunConfig
from ddla.data.config import DataConfig
from ddla.errors import ConfigError
from ddla.models.config import ModelConfig
from ddla.optim import OptimConfig
from ddla.sync.config import SyncConfig

CASES = [
    # (override, message, help): the texts the hand-written checks gave
    ("comm.backend=mpi", "comm.backend: unknown backend 'mpi'", "choose one of: auto, gloo, nccl"),
    (
        "comm.clock=fast",
        "comm.clock: unknown clock 'fast'",
        "choose one of: real, virtual, virtual-cpu (virtual: no sleeping, for sweeps)",
    ),
    (
        "sync.strategy=hogwild",
        "sync.strategy: unknown strategy 'hogwild'",
        "choose one of: allreduce, diloco, fedadam, fedavg, fedavgm, fedprox, fedsgd, fedyogi, "
        "gossip, local_sgd, param_server, scaffold, streaming_diloco",
    ),
    (
        "sync.quantized_reduce=tree",
        "sync.quantized_reduce: unknown scheme 'tree'",
        "choose one of: scatter, gather",
    ),
    (
        "optim.name=lion",
        "optim.name: unknown optimizer 'lion'",
        "choose one of: auto, sgd, adamw, adam",
    ),
    ("model.name=vit", "model.name: unknown model 'vit'", "choose one of: cnn, gpt, mlp"),
    (
        "data.dataset=cifar",
        "data.dataset: unknown dataset 'cifar'",
        "choose one of: digits, fashion-mnist, mnist1d, python-stdlib, "
        "or npz:PATH, PATH.npz or text:PATH",
    ),
]


@pytest.mark.parametrize(("override", "message", "hint"), CASES)
def test_unknown_choice_names_setting_value_and_every_allowed_one(override, message, hint):
    with pytest.raises(ConfigError) as info:
        RunConfig.load(None, [override])
    assert (str(info.value), info.value.help) == (message, hint)


def test_declared_values_are_accepted_and_listed():
    assert allowed(CommConfig, "backend") == ("auto", "gloo", "nccl")
    assert allowed(SyncConfig, "strategy") == (
        "allreduce",
        "diloco",
        "fedadam",
        "fedavg",
        "fedavgm",
        "fedprox",
        "fedsgd",
        "fedyogi",
        "gossip",
        "local_sgd",
        "param_server",
        "scaffold",
        "streaming_diloco",
    )
    for name in allowed(OptimConfig, "name"):
        assert OptimConfig(name=name).name == name
    for name in allowed(ModelConfig, "name"):
        assert ModelConfig(name=name).name == name
    assert DataConfig(dataset="npz:/tmp/mine.npz").dataset == "npz:/tmp/mine.npz"  # the family
    with pytest.raises(KeyError):
        allowed(CommConfig, "timeout_s")
