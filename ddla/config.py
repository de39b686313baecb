"""RunConfig: the whole run as a tree of small dataclass configs.

Each component's config lives next to it (``ddla.data.DataConfig``, ``ddla.sync.SyncConfig``,
...); this module assembles them, reads YAML/TOML run files and applies ``--set a.b=c``
overrides, validating every value with an error that names the field and the allowed values.

Example:
    >>> cfg = RunConfig.load(None, ["agents=2", "sync.strategy=allreduce", "train.steps=10"])
    >>> cfg.agents, cfg.train.steps
    (2, 10)
    >>> RunConfig.load(None, ["train.nope=1"])
    Traceback (most recent call last):
    ...
    ddla.errors.ConfigError: unknown setting 'train.nope'
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ddla.comm.config import CommConfig
from ddla.data.config import DataConfig
from ddla.data.preprocess import check_preprocess
from ddla.errors import ConfigError
from ddla.faults import FaultConfig, check_faults
from ddla.fed.config import FedConfig, check_fed
from ddla.models.config import ModelConfig, check_decomposition
from ddla.models.fusion.check import check_keep_agent_models
from ddla.optim import OptimConfig
from ddla.profile.config import ProfileConfig
from ddla.security.config import SecurityConfig, check_run
from ddla.sync.checks import check_sync_run
from ddla.sync.config import SyncConfig, check_background


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    """Length of the run, evaluation and checkpoint cadence, seed."""

    steps: int | None = None
    """Optimizer steps each agent takes; None: from ``epochs``, else the dataset's default
    budget (``ddla.budget.DEFAULT_EPOCHS``; 600 steps where none is set)."""
    epochs: float | None = None
    """Passes over the whole training set by all agents together (instead of ``steps``)."""
    eval_every: int = 100
    """Evaluate on the test set every N steps (and always at the end); 0 = only at the end."""
    checkpoint_every: int = 0
    """Save a checkpoint every N steps; 0 = never."""
    seed: int = 0
    """Seed for the model's initial weights, the partition and the batch order."""
    eval_agents: bool = True
    """Also evaluate each agent's own model (not only the merged global one)."""
    keep_agent_models: bool = False
    """Also write each agent's own final model as ``OUT/agents/agentN.safetensors`` (+ .json),
    the inputs of ``ddla merge``."""

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"train.steps must be >= 1, got {self.steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"train.epochs must be > 0, got {self.epochs}")
        if self.steps is not None and self.epochs is not None:
            raise ConfigError(
                "train.steps and train.epochs are both set",
                help="give the budget one way: --steps N or --set train.epochs=E",
            )
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self, name)}")


#: Engines that can start a run's agents (ddla/launch/<engine>.py; ``local`` is the default).
ENGINES = ("local", "ray", "spark", "dask")


@dataclass(kw_only=True, slots=True)
class LaunchConfig:
    """Which engine starts the agents (``launch.*``).

    It lives here rather than next to ``ddla/launch/``: that package imports the agent, which
    imports this module, so a config there would be an import cycle.

    Example:
        >>> LaunchConfig(engine="dask", address="tcp://10.0.0.5:8786").engine
        'dask'
        >>> LaunchConfig(engine="local", address="auto")
        Traceback (most recent call last):
        ...
        ddla.errors.ConfigError: launch.address is for the ray and dask engines, not local
    """

    engine: str = "local"
    """``local`` (PyTorch's elastic launcher on this machine), ``ray`` (Ray Train's
    TorchTrainer), ``spark`` (pyspark's TorchDistributor) or ``dask`` (dask.distributed)."""
    address: str | None = None
    """Cluster to join: Ray (``auto``, ``ray://HOST:10001`` or ``HOST:6379``) or a Dask
    scheduler (``tcp://HOST:8786``); unset starts a local cluster for the run."""
    master: str | None = None
    """Spark master URL (``spark://HOST:7077``, ``local[4]``); unset runs the agents as local
    torchrun processes next to a local Spark session."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(
                f"launch.engine: unknown engine {self.engine!r}",
                help=f"choose one of: {', '.join(ENGINES)}",
            )
        if self.address is not None and self.engine not in ("ray", "dask"):
            raise ConfigError(
                f"launch.address is for the ray and dask engines, not {self.engine}",
                help="use launch.master for Spark; drop launch.address for local",
            )
        if self.master is not None and self.engine != "spark":
            raise ConfigError(
                f"launch.master is for the spark engine, not {self.engine}",
                help="use launch.address for Ray or Dask clusters",
            )


@dataclass(kw_only=True, slots=True)
class RunConfig:
    """Everything one ``ddla run`` needs."""

    agents: int = 4
    """Number of agents (processes) on this machine; under torchrun, the world size wins."""
    out: str = "runs/latest"
    """Run directory: metrics, summary, model, logs, checkpoints."""
    tensorboard: bool = False
    """Also write TensorBoard event files under ``OUT/tb``."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    comm: CommConfig = field(default_factory=CommConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)

    def __post_init__(self) -> None:
        if self.agents < 1:
            raise ConfigError(
                f"agents must be >= 1, got {self.agents}", help="pass --agents N with N >= 1"
            )
        self.comm.check_agents(self.agents)  # a link override must name an existing agent
        check_run(self)
        check_fed(self)
        check_faults(self)
        check_decomposition(self)
        if self.profile.enabled and self.train.steps is not None:
            self.profile.window(total_steps=self.train.steps)  # a window past the run's end
        check_preprocess(self)
        check_keep_agent_models(self)
        check_background(self)
        check_sync_run(self)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build and validate from a nested dict (as read from a run file); the issue's
        spellings ``fedprox:MU`` and ``fault.byzantine`` are accepted
        (:func:`ddla.fed.aliases.normalize`)."""
        from ddla.fed.aliases import normalize

        return _build(cls, normalize(copy.deepcopy(values)), prefix="")

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
        """Read a YAML/TOML run file (optional), apply ``a.b=c`` overrides, validate."""
        values: dict[str, Any] = read_run_file(path) if path is not None else {}
        for item in overrides or []:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(
                    f"malformed override {item!r}",
                    help="write overrides as --set section.key=value",
                )
            _set_path(values, key.strip().split("."), _scalar(raw))
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def read_run_file(path: str | Path) -> dict[str, Any]:
    """Parse a ``.yaml``/``.yml``/``.toml`` run file into a dict."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read run file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"run file {path} is not valid: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"run file {path} must hold a mapping of settings")
    return data


def _set_path(values: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        nxt = values.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"setting {'.'.join(keys)!r}: {k!r} is not a section")
        values = nxt
    values[keys[-1]] = value


def _scalar(raw: str) -> Any:
    """An override's value as YAML reads it, except that ``A:B`` stays a string.

    YAML 1.1 reads ``3:9`` as the base-60 number 189 (``-1:5`` as -65, ``1:1.5`` as 61.5); no
    setting means that, and the settings written ``A:B`` (``profile.steps=3:9``,
    ``fault.slow=RANK:FACTOR``) then refuse or parse the text itself. This is the one place
    that keeps them: a number read from a value with a colon is the text that was written.

    Example:
        >>> _scalar("3:9"), _scalar("-1:5"), _scalar("1:1.5"), _scalar("12"), _scalar("a:b")
        ('3:9', '-1:5', '1:1.5', 12, 'a:b')
    """
    if not raw:
        return ""
    value = yaml.safe_load(raw)
    if isinstance(value, int | float) and not isinstance(value, bool) and ":" in raw:
        return raw.strip()
    return value


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(
                f"unknown setting {prefix + key!r}",
                help=f"settings here: {', '.join(prefix + n for n in sorted(names))}",
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"setting {prefix + key!r} is a section; give it a mapping")
            kwargs[key] = _build(hint, value, prefix + key + ".")
        else:
            kwargs[key] = _coerce(value, hint, prefix + key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid settings for {prefix or 'run'}: {exc}") from exc


def _coerce(value: Any, hint: Any, name: str) -> Any:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ConfigError(f"setting {name!r} must be {names}, got {value!r}")
