"""Units of federated mode: the new modules' doctests, the on-disk client store, the new
config refusals, the Byzantine spec parser."""

from __future__ import annotations

import doctest
import os

import pytest
import torch

import ddla.compute.federated
import ddla.fed.byzantine
import ddla.fed.client_state
import ddla.fed.privacy
import ddla.sync.fedadam
import ddla.sync.fedavgm
import ddla.sync.fedprox
import ddla.sync.fedyogi
import ddla.sync.scaffold
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.fed.byzantine import parse_byzantine
from ddla.fed.client_state import ClientStore

MODULES = [
    ddla.compute.federated, ddla.fed.byzantine, ddla.fed.client_state, ddla.fed.privacy,
    ddla.sync.fedadam, ddla.sync.fedavgm, ddla.sync.fedprox, ddla.sync.fedyogi,
    ddla.sync.scaffold,
]  # fmt: skip


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_doctests(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_client_store_sparse_rows(tmp_path) -> None:
    store = ClientStore(tmp_path / "c.f32", rows=10_000, dim=50_000)  # 2 GB if dense
    assert store.read(9_999).abs().sum() == 0
    row = torch.arange(50_000, dtype=torch.float32)
    store.write(3, row)
    torch.testing.assert_close(store.read(3), row)
    st = os.stat(tmp_path / "c.f32")
    assert st.st_size == 10_000 * 50_000 * 4
    assert st.st_blocks * 512 < 10 * 50_000 * 4  # only the written row takes disk
    with pytest.raises(IndexError, match="out of range"):
        store.read(10_000)
    with pytest.raises(ValueError, match="holds 50000"):
        store.write(0, torch.zeros(3))
    store.close()


FED = ["sync.strategy=fedavg", "fed.clients=20", "fed.fraction=0.5"]


@pytest.mark.parametrize(
    ("sets", "match"),
    [
        (["sync.strategy=scaffold", "fed.clients=20", "fed.aggregate=median"],
         "scaffold cannot use fed.aggregate=median"),
        (["sync.strategy=scaffold", "fed.clients=20", "train.checkpoint_every=5"],
         "scaffold cannot checkpoint"),
        ([*FED, "fed.dp=central"], "needs the clip S"),
        ([*FED, "fed.dp=central", "fed.clip=1", "fed.dp_noise=0"], "needs fed.dp_noise > 0"),
        ([*FED, "fed.dp=central", "fed.clip=1", "fed.aggregate=median"],
         "cannot use fed.aggregate=median"),
        (["sync.strategy=scaffold", "fed.clients=20", "fed.dp=distributed", "fed.clip=1"],
         "cannot run with sync.strategy=scaffold"),
        ([*FED, "fed.dp=central", "fed.clip=1", "sync.compress=int8"], "is not supported"),
        ([*FED, "fed.dp=local"], "unknown DP mode"),
        ([*FED, "fed.byzantine=30:signflip"], "asks for 30 malicious clients of 20"),
        ([*FED, "fed.beta2=1"], "fed.beta2 must be in"),
        ([*FED, "fed.tau=0"], "fed.tau must be > 0"),
        ([*FED, "fed.mu=-1"], "fed.mu must be >= 0"),
    ],
)  # fmt: skip
def test_config_refusals(sets: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        RunConfig.load(None, sets)
    assert "\n" not in str(err.value)  # one line


def test_accepted_combinations() -> None:
    secure = ["security.enabled=true", "security.secure_aggregation=true"]
    c = RunConfig.load(None, [*FED, "fed.dp=distributed", "fed.clip=0.5", *secure])
    assert c.fed.dp == "distributed"
    assert RunConfig.load(None, [*FED, "fed.byzantine=2:gaussian:3"]).fed.byzantine


@pytest.mark.parametrize(
    "spec", ["x:signflip", "0:signflip", "2:flip", "2:scale", "2:scale:x", "2:gaussian:0",
             "2:signflip:3"],
)  # fmt: skip
def test_bad_byzantine_specs(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"fed\.byzantine"):
        parse_byzantine(spec)


def test_attacks() -> None:
    u, g = torch.tensor([1.0, -2.0]), torch.Generator().manual_seed(0)
    assert parse_byzantine("1:signflip").attack(u, g).tolist() == [-1.0, 2.0]
    assert parse_byzantine("1:scale:-4").attack(u, g).tolist() == [-4.0, 8.0]
    noise = parse_byzantine("1:gaussian:10").attack(torch.zeros(10_000), g)
    assert 9.5 < float(noise.std()) < 10.5
    assert parse_byzantine("1:labelflip").attack(u, g) is u
