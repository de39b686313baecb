"""Composition of compressors, e.g. ``topk:0.01+int8`` (top-k, then its values in int8).

The first stage sees the tensor; every later stage re-compresses each floating-point tensor of
the previous payload (top-k values, PowerSGD factors, block scales) and leaves integer tensors
(indices, codes) alone. Decoding runs the stages backwards. Only the first stage may be a
sparsifier or low-rank method; later stages must be value quantizers.
"""

from __future__ import annotations

from typing import Any

import torch

from ddla.compress.base import Compressor, Payload
from ddla.errors import ConfigError

#: Names allowed after the first stage of a chain.
VALUE_STAGES = ("fp16", "bf16", "int8", "int4")


class Chain(Compressor):
    """Apply ``stages`` in order; bytes are those of the final nested payload.

    Example:
        >>> import torch
        >>> from ddla.compress.topk import TopK
        >>> from ddla.compress.int8 import Int8
        >>> c = Chain([TopK(0.5), Int8()])
        >>> c.compress(torch.randn(256)).nbytes  # 128 int8 codes + 1 scale + 128 int32 indices
        644
    """

    def __init__(self, stages: list[Compressor]) -> None:
        if len(stages) < 2:
            raise ConfigError("a compressor chain needs at least two stages")
        for stage in stages[1:]:
            if stage.name not in VALUE_STAGES:
                raise ConfigError(
                    f"compressor {stage.spec!r} cannot follow another stage in a chain",
                    help=f"after the first stage use one of: {', '.join(VALUE_STAGES)}",
                )
        self.stages = stages
        self.wants_error_feedback = any(s.wants_error_feedback for s in stages)  # type: ignore[misc]

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.spec

    @property
    def spec(self) -> str:
        return "+".join(s.spec for s in self.stages)

    def _nest(self, payload: Payload, index: int, key: str) -> Payload:
        tensors: dict[str, torch.Tensor | Payload] = {}
        for name, t in payload.tensors.items():
            if isinstance(t, Payload):
                tensors[name] = self._nest(t, index, f"{key}/{name}")
            elif t.is_floating_point():
                inner = self.stages[index].compress(t, key=f"{key}/{name}")
                inner.meta["stage"] = index
                tensors[name] = inner
            else:
                tensors[name] = t
        return Payload(tensors, payload.shape, payload.dtype, payload.meta)

    def compress(self, tensor: torch.Tensor, *, key: str = "0") -> Payload:
        payload = self.stages[0].compress(tensor, key=key)
        for index in range(1, len(self.stages)):
            payload = self._nest(payload, index, key)
        return payload

    def _decode(self, payload: Payload, index: int) -> torch.Tensor:
        tensors: dict[str, torch.Tensor | Payload] = {
            name: self._decode(t, int(t.meta["stage"])) if isinstance(t, Payload) else t
            for name, t in payload.tensors.items()
        }
        flat = Payload(tensors, payload.shape, payload.dtype, payload.meta)
        return self.stages[index].decompress(flat)

    def decompress(self, payload: Payload) -> torch.Tensor:
        return self._decode(payload, 0)

    def state_dict(self) -> dict[str, Any]:
        return {str(i): s.state_dict() for i, s in enumerate(self.stages)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, s in enumerate(self.stages):
            s.load_state_dict(state[str(i)])
