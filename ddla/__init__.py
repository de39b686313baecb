"""ddla: distributed deep learning agents on torch.distributed.

Train one PyTorch model across many agents that each hold part of the data::

    import ddla

    def make_job() -> ddla.Job:          # runs inside every agent
        ds = ddla.data.load_dataset("digits")
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        return ddla.Job(model=model, train=(ds.x_train, ds.y_train), test=(ds.x_test, ds.y_test))

    summary = ddla.launch(make_job, overrides=["agents=4", "train.steps=200"])

The same script runs under ``torchrun --nnodes N ...``: each process becomes one agent.
"""

from __future__ import annotations

import copyreg
import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from ddla.errors import DdlaError

if TYPE_CHECKING:
    from ddla import data
    from ddla.config import RunConfig, TrainConfig
    from ddla.job import Job
    from ddla.launch import launch

__all__ = ["DdlaError", "Job", "RunConfig", "TrainConfig", "data", "launch", "run"]
__version__ = "0.1.0"

# Imported on first use (PEP 562): ``import ddla.cli`` (``ddla --help``) must not pay for
# torch, which ``ddla.job`` and ``ddla.launch`` import.
_LAZY = {
    "data": ("ddla.data", None),
    "RunConfig": ("ddla.config", "RunConfig"),
    "TrainConfig": ("ddla.config", "TrainConfig"),
    "Job": ("ddla.job", "Job"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ddla' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """``ddla.launch`` is the function, although ``ddla/launch/`` is also a subpackage.

    Importing a subpackage binds it on its parent (``setattr(ddla, "launch", <module>)``),
    which would shadow the function once anything imports ``ddla.launch``; an eager
    ``from ddla.launch import launch`` here rebound it, but costs torch on ``import ddla``.
    The property keeps the name the function, and the setter lets the import bind nothing.
    """

    @property
    def launch(self) -> Any:
        return importlib.import_module("ddla.launch").launch

    @launch.setter
    def launch(self, value: Any) -> None:
        if not isinstance(value, types.ModuleType):  # someone replacing the function itself
            raise AttributeError("ddla.launch is read-only")


sys.modules[__name__].__class__ = _Package


def _by_reference(module: _Package) -> tuple[Any, tuple[str]]:
    return importlib.import_module, (module.__name__,)


# Pickle (and cloudpickle, which Ray, Spark and Dask use to ship a job factory defined in a
# script by value) would treat a ModuleType subclass as a plain object and try to copy it;
# a module travels by name.
copyreg.pickle(_Package, _by_reference)


def run(config: RunConfig | None = None, **kwargs: object) -> dict:
    """Run a configured job (zoo model, built-in dataset) and return its summary.

    Example:
        >>> cfg = RunConfig.load(None, ["agents=2", "data.dataset=digits"])
        >>> summary = ddla.run(cfg)  # doctest: +SKIP
    """
    from ddla.config import RunConfig
    from ddla.launch import launch

    return launch(config=config or RunConfig(), **kwargs)  # type: ignore[arg-type]
