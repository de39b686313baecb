"""The Compressor contract: what one agent puts on the wire for one tensor, byte for byte.

A compressor turns a float tensor into a :class:`Payload` (a few small tensors) and back. The
payload's :attr:`Payload.nbytes` counts every tensor that travels — values, indices, scales,
low-rank factors — so byte accounting is exact. The payload's shape and dtype are *not* sent:
every agent reduces tensors of the same shape, so the receiver already knows them and can lay
out the incoming bytes from its own payload (:func:`pack` / :func:`unpack`).

Example:
    >>> import torch
    >>> from ddla.compress import build_compressor
    >>> c = build_compressor("int8")
    >>> x = torch.randn(1000)
    >>> p = c.compress(x)
    >>> p.nbytes  # 1000 int8 codes + 8 fp32 block scales (block 128)
    1032
    >>> bool((c.decompress(p) - x).abs().max() <= x.abs().max() / 254 + 1e-6)
    True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch


@dataclass(slots=True)
class Payload:
    """What one compressed tensor puts on the wire.

    ``tensors`` hold the bytes that travel (possibly nested payloads when compressors are
    chained); ``shape``, ``dtype`` and ``meta`` are derived from the input's shape and the
    compressor's settings, which every agent knows, so they cost nothing on the wire.
    """

    tensors: dict[str, torch.Tensor | Payload]
    shape: tuple[int, ...]
    dtype: torch.dtype
    meta: dict[str, Any] = field(default_factory=dict)
    #: What ``decompress`` of this very payload returns, when the compressor that made it has
    #: already computed it (error feedback decodes its own payload to keep the residual), so
    #: the sender need not decode it again. Never travels: :func:`unpack` leaves it None.
    decoded: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        """Exact bytes on the wire: the sum of every (nested) tensor's storage."""
        total = 0
        for t in self.tensors.values():
            total += t.nbytes if isinstance(t, Payload) else t.numel() * t.element_size()
        return total

    def flat(self) -> list[torch.Tensor]:
        """The wire tensors in a fixed order (sorted keys, nested payloads expanded)."""
        out: list[torch.Tensor] = []
        for key in sorted(self.tensors):
            t = self.tensors[key]
            out.extend(t.flat() if isinstance(t, Payload) else [t])
        return out


def pack(payloads: list[Payload]) -> torch.Tensor:
    """Concatenate the raw bytes of payloads into one ``uint8`` buffer (one collective)."""
    parts = [t.contiguous().view(-1).view(torch.uint8) for p in payloads for t in p.flat()]
    if not parts:
        return torch.empty(0, dtype=torch.uint8)
    return torch.cat(parts)


def unpack(buffer: torch.Tensor, like: list[Payload]) -> list[Payload]:
    """Rebuild payloads from a peer's :func:`pack` buffer, using this agent's as the layout."""
    offset = 0

    def rebuild(p: Payload) -> Payload:
        nonlocal offset
        tensors: dict[str, torch.Tensor | Payload] = {}
        for key in sorted(p.tensors):
            t = p.tensors[key]
            if isinstance(t, Payload):
                tensors[key] = rebuild(t)
                continue
            n = t.numel() * t.element_size()
            raw = buffer[offset : offset + n].clone()
            offset += n
            tensors[key] = raw.view(t.dtype).view(t.shape)
        return Payload(tensors, p.shape, p.dtype, dict(p.meta))

    out = [rebuild(p) for p in like]
    if offset != buffer.numel():
        raise ValueError(f"payload layout covers {offset} bytes, the buffer has {buffer.numel()}")
    return out


class Compressor(ABC):
    """Base class: ``compress`` -> :class:`Payload` -> ``decompress``; exact ``nbytes``.

    ``key`` names the tensor being compressed (e.g. a parameter index) so stateful compressors
    (error feedback residuals, PowerSGD's warm-started factors) keep one state per tensor.
    """

    #: Registry name; ``spec`` is the string that rebuilds this compressor.
    name: ClassVar[str] = "base"
    #: True when payloads of different agents can simply be summed (a plain all-reduce in a
    #: lower precision); otherwise see :attr:`requantize_block` (int8/int4) or they are
    #: all-gathered and decoded one by one.
    summable: ClassVar[bool] = False
    #: True when the compressor drops information that error feedback should carry over.
    wants_error_feedback: ClassVar[bool] = False

    @property
    def spec(self) -> str:
        return self.name

    @property
    def requantize_block(self) -> int | None:
        """Block length when payloads are blockwise quantized and stateless (``int8``,
        ``int4``): the compressed all-reduce then reduce-scatters block-aligned chunks and
        re-quantizes each partial mean. None (the default): all-gather whole payloads."""
        return None

    def payload_nbytes(self, numel: int) -> int | None:
        """Exact wire bytes of the payload of a tensor of ``numel`` values, when that does not
        depend on the values (fixed-rate codecs); None otherwise."""
        return None

    @abstractmethod
    def compress(self, tensor: torch.Tensor, *, key: str = "0") -> Payload:
        """Encode ``tensor`` (any float dtype/shape) into what goes on the wire."""

    @abstractmethod
    def decompress(self, payload: Payload) -> torch.Tensor:
        """Decode a payload back to a tensor of the original shape and dtype."""

    def nbytes(self, payload: Payload) -> int:
        """Exact bytes this payload puts on the wire."""
        return payload.nbytes

    def state_dict(self) -> dict[str, Any]:
        """Per-tensor state (residuals, warm starts) for checkpoints; empty when stateless."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (stateless default)
        """Restore :meth:`state_dict`; stateless compressors have nothing to restore."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"
