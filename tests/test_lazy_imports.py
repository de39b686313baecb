"""What importing ddla costs: the CLI and the agent load only what they use (fresh interpreters)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY_FOR_CLI = ("torch", "numpy", "matplotlib", "scipy", "torchmetrics", "tensorboard", "sklearn")
HEAVY_FOR_AGENT = ("matplotlib", "scipy", "torchmetrics", "tensorboard", "sklearn", "ddla.report")


def _loaded(statement: str, names: tuple[str, ...]) -> list[str]:
    code = (
        f"import sys\n{statement}\n"
        f"print('LOADED:', *(m for m in {names!r} if m in sys.modules), file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = next(x for x in out.stderr.splitlines() if x.startswith("LOADED:"))
    return line.split()[1:]


def test_import_ddla_cli_loads_no_torch_or_plot_stack() -> None:
    assert _loaded("import ddla.cli", HEAVY_FOR_CLI) == []


def test_cli_help_and_argument_errors_load_no_torch() -> None:
    for argv in (["--help"], ["run", "--help"], ["run", "--agents", "x"]):
        statement = (
            f"import ddla.cli\ntry:\n    ddla.cli.app({argv!r})\nexcept SystemExit:\n    pass"
        )
        assert _loaded(statement, HEAVY_FOR_CLI) == [], argv


def test_agent_loads_no_report_metrics_or_tensorboard_stack() -> None:
    assert _loaded("import ddla.agent", HEAVY_FOR_AGENT) == []


def test_public_api_is_still_reachable_lazily() -> None:
    code = "import ddla; print(ddla.Job.__name__, ddla.launch.__name__, ddla.data.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["Job", "launch", "ddla.data"]
    with pytest.raises(AttributeError):
        import ddla

        ddla.no_such_name  # noqa: B018


def test_ddla_launch_stays_the_function_after_its_subpackage_is_imported() -> None:
    # Importing ddla/launch/ binds the subpackage on ddla; the name must stay the function.
    code = (
        "import ddla.cli, ddla.launch.local, ddla\n"
        "from ddla.launch import launch\n"
        "print(ddla.launch is launch, callable(ddla.launch))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_the_ddla_module_pickles_by_name() -> None:
    # Ray, Spark and Dask ship a job factory defined in a script by value (cloudpickle),
    # with the modules it uses; ddla's module is a ModuleType subclass (ddla.launch stays
    # the function), which pickle copied as an object and failed on ("cannot pickle
    # '_Package' object": examples/on_engines.py on every engine).
    import pickle

    import ddla

    assert pickle.loads(pickle.dumps(ddla)) is ddla
    cloudpickle = pytest.importorskip("cloudpickle")
    namespace: dict = {"ddla": ddla}
    exec("def factory():\n    return ddla.__name__", namespace)  # not importable: by value
    assert cloudpickle.loads(cloudpickle.dumps(namespace["factory"]))() == "ddla"
