"""Configuration of the model (``model.*``)."""

from __future__ import annotations

from dataclasses import dataclass

from ddla.choices import check_choices, choice
from ddla.errors import ConfigError


def _models() -> list[str]:
    from ddla.models.zoo import MODELS  # late: the zoo imports this module

    return sorted(MODELS)


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """Which model to train; its input and output sizes come from the dataset.

    Example:
        >>> ModelConfig(name="cnn").hidden
        256
    """

    name: str = choice("mlp", _models, noun="model")
    """Architecture: one of ``ddla.models.MODELS`` (``mlp``, ``cnn``, ``gpt``)."""
    hidden: int = 256
    """Width of the hidden layers (MLP units; CNN fully connected head; GPT model width)."""
    channels: int = 32
    """Convolution channels (CNN only)."""
    layers: int = 4
    """Transformer blocks (GPT only)."""
    heads: int = 4
    """Attention heads (GPT only; must divide ``hidden``)."""

    def __post_init__(self) -> None:
        check_choices(self, "model")
        if min(self.hidden, self.channels, self.layers, self.heads) < 1:
            raise ConfigError("model.hidden, channels, layers and heads must be >= 1")
