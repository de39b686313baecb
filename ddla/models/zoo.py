"""The model zoo: small, real architectures sized from the dataset.

- ``mlp``: flatten, ``model.depth`` hidden ReLU layers (two by default).
- ``gpt``: a small decoder-only transformer language model (``ddla/models/gpt.py``).
- ``cnn``: 1-D convolutions for vector inputs (MNIST-1D, as in Greydanus 2020, arXiv
  2011.14439: three conv layers of 25 channels, kernel 5, stride 2), 2-D convolutions for images.

Example:
    >>> from ddla.models import ModelConfig, build_model
    >>> model = build_model(ModelConfig(name="cnn"), input_shape=(40,), num_classes=10)
    >>> import torch; model(torch.zeros(2, 40)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ddla.models.config import ModelConfig
from ddla.models.gpt import gpt


def mlp(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    d = math.prod(input_shape)
    h = config.hidden
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(d, h), nn.ReLU()]
    for _ in range(config.depth - 1):  # model.depth hidden layers (2 by default)
        layers += [nn.Linear(h, h), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(h, num_classes))


class _AddChannel(nn.Module):
    """(N, L) -> (N, 1, L): 1-D datasets store samples without a channel axis."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1) if x.dim() == 2 else x


def _cnn1d(config: ModelConfig, length: int, in_ch: int, num_classes: int) -> nn.Module:
    c = config.channels
    layers: list[nn.Module] = [_AddChannel()]
    size, ch = length, in_ch
    for _ in range(3):
        layers += [nn.Conv1d(ch, c, kernel_size=5, stride=2, padding=1), nn.ReLU()]
        size, ch = (size + 2 - 5) // 2 + 1, c
    layers += [nn.Flatten(), nn.Linear(c * size, num_classes)]
    return nn.Sequential(*layers)


def _cnn2d(config: ModelConfig, shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    c, (ch, h, w) = config.channels, shape
    # Two conv blocks with pooling: the classic LeNet-like layout that reaches ~91% on
    # Fashion-MNIST while staying cheap enough to train on two CPU cores.
    return nn.Sequential(
        nn.Conv2d(ch, c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * c * (h // 4) * (w // 4), config.hidden),
        nn.ReLU(),
        nn.Linear(config.hidden, num_classes),
    )


def cnn(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) == 1:
        return _cnn1d(config, input_shape[0], 1, num_classes)
    if len(input_shape) == 2:
        return _cnn1d(config, input_shape[1], input_shape[0], num_classes)
    if len(input_shape) == 3:
        return _cnn2d(config, (input_shape[0], input_shape[1], input_shape[2]), num_classes)
    raise ValueError(f"cnn supports 1-D or 2-D inputs, got shape {input_shape}")


MODELS: dict[str, Callable[[ModelConfig, tuple[int, ...], int], nn.Module]] = {
    "mlp": mlp,
    "cnn": cnn,
    "gpt": gpt,
}


def build_model(
    config: ModelConfig, *, input_shape: tuple[int, ...], num_classes: int, seed: int = 0
) -> nn.Module:
    """Build the named model; every agent calling this with the same seed gets the same weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[config.name](config, tuple(input_shape), num_classes)
