"""Run-config rule for ``train.keep_agent_models`` (no torch: the config imports it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ddla.errors import ConfigError

if TYPE_CHECKING:
    from ddla.config import RunConfig


def check_keep_agent_models(config: RunConfig) -> None:
    """A decomposed agent holds a stage or shard, not a model ``ddla merge`` can fuse."""
    if config.train.keep_agent_models and config.model.decomposed:
        raise ConfigError(
            "train.keep_agent_models writes each agent's whole model; with model.stages or "
            "model.tensor_parallel an agent holds only a stage or a shard",
            help="unset train.keep_agent_models (model.safetensors holds the assembled model)",
        )
