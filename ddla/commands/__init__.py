"""Bodies of CLI commands too large for :mod:`ddla.cli` (which registers them).

Modules here import torch only inside the command functions: ``import ddla.cli`` stays light.
"""
