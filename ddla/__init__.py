"""ddla: distributed deep learning agents on torch.distributed."""

from ddla.errors import DdlaError

__all__ = ["DdlaError"]
__version__ = "0.1.0"
