"""The failure paths of fault tolerance, each a clear one-line error: refused settings, a
group that cannot form in time, faults written wrongly."""

from __future__ import annotations

import pytest
import torch.distributed as dist

from ddla.comm import Transport
from ddla.comm.elastic import ElasticGroup
from ddla.config import RunConfig
from ddla.errors import CommTimeoutError, ConfigError
from ddla.faults import survives


def _one_line(exc: BaseException) -> None:
    assert "\n" not in str(exc) and getattr(exc, "help", None)


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["sync.strategy=allreduce", "fault.survive=required"], "allreduce cannot carry on"),
        (
            ["sync.strategy=diloco", "fault.survive=required", "security.enabled=true"],
            "security.enabled is not supported",
        ),
        (["fault.kill=1-30"], "'1-30' is not RANK@STEP"),
        (["fault.stop=1@0"], "'1@0' is not RANK@STEP"),
        (["agents=2", "fault.kill=2@5"], "agent 2 does not exist"),
        (["fault.survive=maybe"], "unknown fault.survive value 'maybe'"),
        (["fault.max_restarts=-1"], "fault.max_restarts must be >= 0"),
        (["fault.rejoin_wait_s=120"], r"rejoin_wait_s \(120\) must be below comm.timeout_s"),
    ],
)
def test_fault_settings_that_cannot_work_are_refused(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        RunConfig.load(None, sets)
    assert "\n" not in str(info.value)


def test_auto_survives_for_periodic_strategies_only() -> None:
    assert survives(RunConfig.load(None, ["agents=3", "sync.strategy=diloco"]))
    assert survives(RunConfig.load(None, ["agents=3", "sync.strategy=local_sgd"]))
    assert not survives(RunConfig.load(None, ["agents=3", "sync.strategy=allreduce"]))
    assert not survives(RunConfig.load(None, ["agents=3", "sync.strategy=diloco",
                                              "fault.survive=never"]))  # fmt: skip
    assert not survives(RunConfig.load(None, ["agents=1", "sync.strategy=diloco"]))


def test_faults_in_the_config_become_an_injector() -> None:
    faults = RunConfig.load(None, ["fault.kill=1@30,2@5", "fault.stop=0@7"]).fault.injector()
    assert faults is not None
    assert [(f.kind, f.rank, f.at_step) for f in faults.faults] == [
        ("kill", 1, 30), ("kill", 2, 5), ("stop", 0, 7),
    ]  # fmt: skip
    assert RunConfig.load(None, []).fault.injector() is None


def test_a_member_that_never_builds_the_new_group_is_a_timeout() -> None:
    store = dist.HashStore()
    group = ElasticGroup(Transport.single(timeout_s=0.5), store=store, run_world=2,
                         interval_s=0.05)  # fmt: skip
    group.me, group.members = 0, [0, 1]
    try:
        with pytest.raises(CommTimeoutError, match=r"did not all build their new group") as info:
            group._build(1, [0, 1])  # agent 1 never comes
        _one_line(info.value)
    finally:
        group.close()
