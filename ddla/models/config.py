"""Configuration of the model (``model.*``)."""

from __future__ import annotations

from dataclasses import dataclass

from ddla.errors import ConfigError


@dataclass(kw_only=True, slots=True)
class ModelConfig:
    """Which model to train; its input and output sizes come from the dataset.

    Example:
        >>> ModelConfig(name="cnn").hidden
        256
    """

    name: str = "mlp"
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
        from ddla.models.zoo import MODELS

        if self.name not in MODELS:
            raise ConfigError(
                f"model.name: unknown model {self.name!r}",
                help=f"choose one of: {', '.join(sorted(MODELS))}",
            )
        if min(self.hidden, self.channels, self.layers, self.heads) < 1:
            raise ConfigError("model.hidden, channels, layers and heads must be >= 1")
