"""Compressors, one per file, composable with ``+``, and their registry.

Spec grammar: ``STAGE[+STAGE...]`` with ``STAGE = NAME[:ARG]`` —
``none``, ``fp16``, ``bf16``, ``int8[:BLOCK]``, ``int4[:BLOCK]``, ``topk:RATIO``,
``powersgd:RANK``, ``sign[:BLOCK]``, ``ternary[:BLOCK]``; e.g. ``topk:0.01+int8``. Specs whose
stages drop information (``topk``, ``powersgd``, ``sign``, ``ternary``) are wrapped in error
feedback as a whole, so the residual also holds what later stages rounded away.

Example:
    >>> from ddla.compress import build_compressor
    >>> build_compressor("topk:0.01+int8").spec
    'topk:0.01+int8'
    >>> sorted(COMPRESSORS)
    ['bf16', 'fp16', 'int4', 'int8', 'none', 'powersgd', 'sign', 'ternary', 'topk']
"""

from __future__ import annotations

from typing import Any

from ddla.compress.base import Compressor, Payload, pack, unpack
from ddla.compress.bf16 import BF16
from ddla.compress.chain import Chain
from ddla.compress.error_feedback import ErrorFeedback
from ddla.compress.fp16 import FP16
from ddla.compress.identity import Identity
from ddla.compress.int4 import Int4
from ddla.compress.int8 import Int8
from ddla.compress.powersgd import PowerSGD
from ddla.compress.sign import Sign
from ddla.compress.ternary import Ternary
from ddla.compress.topk import TopK
from ddla.errors import ConfigError

COMPRESSORS: dict[str, type[Compressor]] = {
    "none": Identity,
    "fp16": FP16,
    "bf16": BF16,
    "int8": Int8,
    "int4": Int4,
    "topk": TopK,
    "powersgd": PowerSGD,
    "sign": Sign,
    "ternary": Ternary,
}

#: How each name's ``:ARG`` is read: (parser, required, example).
_ARGS: dict[str, tuple[Any, bool, str]] = {
    "none": (None, False, "none"),
    "fp16": (None, False, "fp16"),
    "bf16": (None, False, "bf16"),
    "int8": (int, False, "int8:128"),
    "int4": (int, False, "int4:128"),
    "topk": (float, True, "topk:0.01"),
    "powersgd": (int, True, "powersgd:4"),
    "sign": (int, False, "sign:1024"),
    "ternary": (int, False, "ternary:1024"),
}

ALLOWED = (
    "none, fp16, bf16, int8[:BLOCK], int4[:BLOCK], topk:RATIO, powersgd:RANK, sign[:BLOCK], "
    "ternary[:BLOCK] (join with +)"
)


def _build_stage(text: str) -> Compressor:
    name, _, arg = text.strip().partition(":")
    if name not in COMPRESSORS:
        raise ConfigError(f"unknown compressor {name!r} in spec", help=f"choose from: {ALLOWED}")
    parse, required, example = _ARGS[name]
    if parse is None:
        if arg:
            raise ConfigError(f"compressor {name!r} takes no argument, got {text!r}")
        return COMPRESSORS[name]()
    if not arg:
        if required:
            raise ConfigError(f"compressor {name!r} needs an argument", help=f"write {example}")
        return COMPRESSORS[name]()
    try:
        value = parse(arg)
    except ValueError:
        raise ConfigError(
            f"compressor {name!r}: cannot read {arg!r} as {parse.__name__}", help=f"write {example}"
        ) from None
    return COMPRESSORS[name](value)


def build_compressor(spec: str) -> Compressor:
    """Build the compressor a spec string names (see the module docstring for the grammar).

    Raises:
        ConfigError: unknown name, missing or bad argument, or an invalid chain.
    """
    parts = [p for p in spec.split("+")]
    if not spec.strip() or any(not p.strip() for p in parts):
        raise ConfigError(f"empty compressor spec {spec!r}", help=f"choose from: {ALLOWED}")
    stages = [_build_stage(p) for p in parts]
    if len(stages) > 1 and any(s.name == "none" for s in stages):
        raise ConfigError(f"'none' cannot be chained: {spec!r}", help=f"choose from: {ALLOWED}")
    compressor = stages[0] if len(stages) == 1 else Chain(stages)
    if compressor.wants_error_feedback:
        compressor = ErrorFeedback(compressor)
    return compressor


__all__ = [
    "BF16",
    "COMPRESSORS",
    "FP16",
    "Chain",
    "Compressor",
    "ErrorFeedback",
    "Identity",
    "Int4",
    "Int8",
    "Payload",
    "PowerSGD",
    "Sign",
    "Ternary",
    "TopK",
    "build_compressor",
    "pack",
    "unpack",
]
