"""Stage plans (balanced by parameters, named split points) and the refusals of a decomposed
run: each bad setting is refused up front with one line naming it."""

from __future__ import annotations

import pytest
from torch import nn

from ddla.compute.layout import check_layout
from ddla.config import RunConfig
from ddla.errors import ConfigError
from ddla.models import ModelConfig, build_model
from ddla.models.decompose import balanced_split, plan_stages, stage_module


def _deep(depth: int = 8, hidden: int = 64) -> nn.Module:
    return build_model(
        ModelConfig(name="mlp", hidden=hidden, depth=depth), input_shape=(784,), num_classes=10
    )


def test_balanced_split_minimises_the_largest_stage() -> None:
    weights = [5, 1, 1, 1, 1, 1]
    starts = balanced_split(weights, 2)
    assert starts == [0, 1]  # [5] | [1 x 5]: largest 5, the best possible
    for parts in range(1, 7):
        starts = balanced_split(weights, parts)
        assert len(starts) == parts and starts[0] == 0 and starts == sorted(set(starts))


def test_auto_plan_covers_every_layer_once_and_balances_parameters() -> None:
    model = _deep()
    layers = [n for n, _ in model.named_children()]
    for stages in (2, 4):
        plan = plan_stages(model, stages)
        assert [n for stage in plan for n in stage] == layers
        sizes = [sum(p.numel() for p in stage_module(model, s).parameters()) for s in plan]
        total = sum(p.numel() for p in model.parameters())
        # The first Linear (784 x 64) alone exceeds total/4, so it is the lower bound there.
        first = 784 * 64 + 64
        assert max(sizes) <= max(first, total / stages) + 64 * 64 + 64


def test_manual_split_points_by_module_name() -> None:
    model = _deep(depth=2)  # 0 Flatten, 1 Linear, 2 ReLU, 3 Linear, 4 ReLU, 5 Linear
    assert plan_stages(model, 3, "3,5") == [["0", "1", "2"], ["3", "4"], ["5"]]
    stage = stage_module(model, ["3", "4"])
    assert list(stage.state_dict()) == ["3.weight", "3.bias"]
    assert stage[0] is model[3]  # the model's own module: trained in place


@pytest.mark.parametrize(
    ("stages", "split", "match"),
    [
        (7, "auto", "only 6 layers"),
        (2, "9", "9 names no layer"),
        (3, "3", "names 1 split points"),
        (3, "4,3", "in layer order"),
        (2, "0", "in layer order"),
    ],
)
def test_bad_stage_plans_are_refused(stages: int, split: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        plan_stages(_deep(depth=2), stages, split)
    assert "\n" not in str(info.value) and info.value.help


def test_a_model_that_is_not_sequential_is_refused() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2)

    with pytest.raises(ConfigError, match=r"needs an nn\.Sequential"):
        plan_stages(Net(), 2)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["agents=3", "model.stages=2"], "agents=3 cannot form replicas"),
        (["agents=2", "model.stages=2", "data.batch_size=30", "model.microbatches=4"],
         "does not divide data.batch_size=30"),
        (["agents=2", "model.stages=2", "model.schedule=1f1b", "model.microbatches=1"],
         "1f1b needs model.microbatches >= model.stages"),
        (["agents=6", "model.stages=2", "model.tensor_parallel=2"], "agents=6 cannot form"),
        (["agents=2", "model.stages=2", "sync.strategy=fedavg", "fed.clients=4"], "is federated"),
        (["agents=2", "model.tensor_parallel=2", "security.enabled=true",
          "security.secret_file=k"], "secure aggregation"),
        (["agents=2", "model.stages=2", "data.share=0.1"], "data.share"),
        (["agents=2", "model.schedule=zigzag"], "model.schedule must be one of"),
        (["agents=2", "model.stages=0"], "must be >= 1"),
    ],
)  # fmt: skip
def test_bad_run_settings_are_refused_in_one_line(overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        RunConfig.load(None, overrides)
    assert "\n" not in str(info.value)


def test_the_world_size_under_torchrun_is_checked_by_the_agent() -> None:
    config = RunConfig.load(None, ["agents=4", "model.stages=2"])
    assert check_layout(config, 4) == 2
    with pytest.raises(ConfigError, match="5 agents cannot form replicas"):
        check_layout(config, 5)


@pytest.mark.parametrize("module", ["ddla.models.decompose", "ddla.models.config", "ddla.compute"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_every_compute_is_registered_under_its_name() -> None:
    from ddla.compute import COMPUTES

    assert all(cls.name == name for name, cls in COMPUTES.items())


def test_a_torch_whose_private_pipelining_api_changed_is_refused_in_one_line(monkeypatch) -> None:
    from torch.distributed.pipelining import PipelineStage

    from ddla.compute.pipeline import check_pipelining_api
    from ddla.errors import DdlaError

    check_pipelining_api()  # the installed torch: the API ddla's stage overrides
    monkeypatch.setattr(PipelineStage, "_warmup_forward_vote", lambda self, votes: votes)
    with pytest.raises(DdlaError, match=r"_warmup_forward_vote is now \('self', 'votes'\)") as e:
        check_pipelining_api()
    assert "\n" not in str(e.value) and "torch==2.13" in e.value.help
    monkeypatch.undo()
    monkeypatch.delattr(PipelineStage, "_warmup_backward_result")
    with pytest.raises(DdlaError, match="_warmup_backward_result is missing"):
        check_pipelining_api()


def test_a_checkpoint_of_other_layers_is_refused_on_resume() -> None:
    from ddla.compute.layout import Layout

    model = _deep(depth=2)
    plan = plan_stages(model, 2, "3")  # now: stage 0 = layers 0-2; checkpointed: 0-4
    stage = stage_module(model, plan[0])
    layout = Layout(1, 2, 1, 0, 0, 0, stage, None, None, plan=plan)  # type: ignore[arg-type]
    layout.check_resumed(stage.state_dict())  # the same layers: fine
    moved = stage_module(model, ["0", "1", "2", "3", "4"]).state_dict()
    with pytest.raises(ConfigError, match="holds other layers than the stage plan") as info:
        layout.check_resumed(moved)
    assert "\n" not in str(info.value) and "model.split" in info.value.help
