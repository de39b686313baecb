"""Configuration of the model (``model.*``), including how it is decomposed across agents."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ddla.choices import check_choices, choice
from ddla.errors import ConfigError

if TYPE_CHECKING:
    from ddla.config import RunConfig

#: Pipeline schedules of ``torch.distributed.pipelining`` that ``model.schedule`` names.
SCHEDULES = ("gpipe", "1f1b")


def _models() -> list[str]:
    from ddla.models.zoo import MODELS  # late: the zoo imports this module

    return sorted(MODELS)


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """Which model to train; its input and output sizes come from the dataset.

    Decomposition (``stages``, ``tensor_parallel``) splits the model across agents; the agents
    left over form data-parallel replicas: ``agents = replicas * stages * tensor_parallel``.

    Example:
        >>> ModelConfig(name="cnn").hidden
        256
        >>> ModelConfig(stages=2, microbatches=4, schedule="1f1b").stages
        2
    """

    name: str = choice("mlp", _models, noun="model")
    """Architecture: one of ``ddla.models.MODELS`` (``mlp``, ``cnn``, ``gpt``)."""
    hidden: int = 256
    """Width of the hidden layers (MLP units; CNN fully connected head; GPT model width)."""
    depth: int = 2
    """Hidden layers of the MLP (``depth + 1`` Linear layers)."""
    channels: int = 32
    """Convolution channels (CNN only)."""
    layers: int = 4
    """Transformer blocks (GPT only)."""
    heads: int = 4
    """Attention heads (GPT only; must divide ``hidden``)."""
    tie: bool = True
    """GPT only: the output projection is the token embedding (one weight); ``false`` gives
    the head its own weight, which pipeline stages need (embedding and head on two agents)."""
    stages: int = 1
    """Pipeline stages: the model's layers cut into this many consecutive parts, one per agent
    of a replica (``torch.distributed.pipelining``)."""
    microbatches: int = 1
    """Microbatches each batch is split into for the pipeline schedule (must divide
    ``data.batch_size``)."""
    schedule: str = "gpipe"
    """Pipeline schedule: ``gpipe`` (all forwards, then all backwards) or ``1f1b``."""
    split: str = "auto"
    """Where stages start: ``auto`` (balanced by parameter count), ``time`` (balanced by each
    layer's forward + backward time measured on a sample batch, agreed across agents) or the
    comma-separated names of the modules that open stages 1..S-1 (e.g. ``"4,8"``)."""
    tensor_parallel: int = 1
    """Agents one replica's Linear layers are split across (Megatron pairs: column- then
    row-parallel, one all-reduce per pair and direction); with ``stages`` too, each stage's
    pairs are split over T agents (``replicas x stages x tensor_parallel`` agents)."""

    def __post_init__(self) -> None:
        check_choices(self, "model")
        if min(self.hidden, self.channels, self.layers, self.heads, self.depth) < 1:
            raise ConfigError("model.hidden, depth, channels, layers and heads must be >= 1")
        if min(self.stages, self.microbatches, self.tensor_parallel) < 1:
            raise ConfigError(
                "model.stages, model.microbatches and model.tensor_parallel must be >= 1",
                help="1 means no pipeline / no tensor parallelism",
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"model.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
                help="--set model.schedule=gpipe or 1f1b",
            )
        if self.name == "gpt" and self.tie and self.stages > 1:
            raise ConfigError(
                "model gpt ties its output projection to the token embedding, so its first and "
                "last pipeline stage would share one weight",
                help="set model.tie=false to split gpt into stages",
            )
        if self.schedule == "1f1b" and self.stages > 1 and self.microbatches < self.stages:
            raise ConfigError(
                f"model.schedule=1f1b needs model.microbatches >= model.stages "
                f"({self.microbatches} < {self.stages})",
                help=f"--set model.microbatches={self.stages} or more, or model.schedule=gpipe",
            )

    @property
    def decomposed(self) -> bool:
        """Whether the model is split across agents (stages or tensor-parallel shards)."""
        return self.stages > 1 or self.tensor_parallel > 1


def check_decomposition(config: RunConfig) -> None:
    """Refuse, in one line each, run settings a decomposed model cannot honour (called when
    the RunConfig is built; the agent count is checked at launch, where the world is known)."""
    mc = config.model
    if not mc.decomposed:
        return
    # An agent under torchrun (or any elastic launcher) has the world size, not config.agents:
    # the agent loop checks that one (ddla.compute.layout.check_layout).
    if "TORCHELASTIC_RUN_ID" not in os.environ and config.agents % (mc.stages * mc.tensor_parallel):
        per = mc.stages * mc.tensor_parallel
        raise ConfigError(
            f"agents={config.agents} cannot form replicas of model.stages={mc.stages} x "
            f"model.tensor_parallel={mc.tensor_parallel} agents",
            help=f"use a multiple of {per} agents (replicas = agents / {per})",
        )
    if config.data.batch_size % mc.microbatches:
        raise ConfigError(
            f"model.microbatches={mc.microbatches} does not divide data.batch_size="
            f"{config.data.batch_size}",
            help="pick microbatches that divide the batch size",
        )
    from ddla.sync import STRATEGIES  # late: the strategies import the model package

    if getattr(STRATEGIES[config.sync.strategy], "federated", False):
        raise ConfigError(
            f"sync.strategy={config.sync.strategy} is federated: a client trains the whole "
            "model, so it cannot run with model.stages / model.tensor_parallel",
            help="use allreduce, local_sgd or diloco with a decomposed model",
        )
    if config.security.enabled:
        raise ConfigError(
            "security.enabled with model decomposition: secure aggregation masks updates "
            "over the whole run, not over a stage's replicas, and activations are not sealed",
            help="leave security.enabled=false with model.stages / model.tensor_parallel",
        )
    if config.data.share != "none" or config.data.pull_every:
        raise ConfigError(
            "data.share / data.pull_every with model decomposition: an agent's samples would "
            "differ from those of the other stages of its replica",
            help="leave data.share=none and data.pull_every=0",
        )
