"""Model zoo, export and merge."""

from ddla.models.config import ModelConfig
from ddla.models.export import load_model, save_model
from ddla.models.merge import average_state_dicts
from ddla.models.zoo import MODELS, build_model

__all__ = [
    "MODELS",
    "ModelConfig",
    "average_state_dicts",
    "build_model",
    "load_model",
    "save_model",
]
