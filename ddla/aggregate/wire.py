"""Wire schemes for a mean over agents, with what travels compressed (unmasked).

Used by :class:`~ddla.aggregate.Aggregator`; the masked schemes are in :mod:`ddla.aggregate.secure`.

Three schemes, chosen by the compressor (the reasoning is in ``docs/compression.md``):

* **summable** payloads (``none``, ``fp16``, ``bf16``) are a plain all-reduce in the wire dtype:
  each agent divides by the world size first (so fp16 sums stay in range), the Transport sums,
  and every agent decodes the same sum.
* **blockwise quantized** payloads (``int8``, ``int4``) are a **reduce-scatter of quantized
  chunks, then an all-gather of the re-quantized partial means**: all tensors of the call are
  flattened into one vector cut into W block-aligned chunks; each agent quantizes every chunk
  and sends chunk j to agent j (one all-to-all); agent j decodes the W versions of its chunk,
  sums them in rank order, divides by W and quantizes that mean once more; one all-gather
  hands every agent every quantized mean, which all agents decode identically. Bytes per agent:
  2(W-1)/W of one quantized copy of the tensors, against (W-1) copies for an all-gather (half
  as many for 4 agents, a fifth for 10). The price is a second rounding: per value the error is
  at most the mean of the agents' half-steps plus half a step of the mean's block. Used only
  when it sends fewer bytes than the all-gather (never for 2 agents, nor for tiny calls).
  ``sign`` (1 bit per value) takes the same path with error feedback on both roundings: each
  agent keeps a residual per chunk it sends and one for the partial mean it re-encodes.
* everything else (``topk``, ``powersgd``, chains) is an **all-gather of
  compressed payloads**: each agent compresses its own tensors once (error feedback sees exactly
  what peers will decode), all payloads of one call travel packed in one ``uint8`` buffer, and
  every agent decodes all W payloads and sums them in rank order. Summation order and inputs are
  the same on every agent, so the results are bitwise identical — agents hold the same
  parameters after a sync. There is no re-quantization of partial sums, so the error is that of
  one compression per agent.

With one agent nothing is sent and the tensors come back unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ddla.compress import Compressor, pack, unpack

if TYPE_CHECKING:
    from ddla.comm import Transport


def compressed_mean(
    transport: Transport,
    tensors: Sequence[torch.Tensor],
    compressor: Compressor,
    *,
    tag: str = "train",
    keys: Sequence[str] | None = None,
    scatter: bool = True,
) -> list[torch.Tensor]:
    """Mean over all agents of each tensor in ``tensors``.

    ``keys`` name the tensors for stateful compressors (error feedback, PowerSGD warm starts);
    they must be stable across calls (default: the position, ``"0"``, ``"1"``, ...). Inputs are
    left untouched; new fp32-accumulated tensors of the input dtype are returned.
    ``scatter=False`` sends int8/int4 as an all-gather of whole payloads too: N-1 payloads
    instead of 2(N-1)/N, but half the latency-bound steps (``sync.quantized_reduce``).

    Example (one agent: nothing travels):

        >>> import torch
        >>> from ddla.compress import build_compressor
        >>> from ddla.comm import Transport
        >>> with Transport.single() as t:
        ...     out = compressed_mean(t, [torch.ones(3)], build_compressor("int8"))
        >>> out[0].tolist()
        [1.0, 1.0, 1.0]
    """
    world = transport.world_size
    if keys is None:
        keys = [str(i) for i in range(len(tensors))]
    if len(keys) != len(tensors):
        raise ValueError(f"got {len(keys)} keys for {len(tensors)} tensors")
    if world == 1 or not tensors:
        return [t.detach().clone() for t in tensors]
    if compressor.summable:
        return _summable(transport, tensors, compressor, tag, keys)
    block = compressor.requantize_block
    if scatter and block is not None and _scatter_sends_less(compressor, tensors, world, block):
        return _requantized(transport, tensors, compressor, tag, block, keys[0])
    payloads = [compressor.compress(t, key=k) for t, k in zip(tensors, keys, strict=True)]
    gathered = transport.all_gather(pack(payloads), tag=tag)
    sums = [torch.zeros(t.shape, dtype=torch.float32) for t in tensors]
    for rank, buffer in enumerate(gathered):
        decoded = payloads if rank == transport.rank else unpack(buffer, payloads)
        for acc, payload in zip(sums, decoded, strict=True):
            # The sender's own decode (error feedback made it) is bitwise what peers decode.
            own = payload.decoded
            acc += (own if own is not None else compressor.decompress(payload)).float()
    return [(s / world).to(t.dtype) for s, t in zip(sums, tensors, strict=True)]


def _summable(
    transport: Transport,
    tensors: Sequence[torch.Tensor],
    compressor: Compressor,
    tag: str,
    keys: Sequence[str],
) -> list[torch.Tensor]:
    world = transport.world_size
    payloads = [
        compressor.compress(t.detach().float() / world, key=k)
        for t, k in zip(tensors, keys, strict=True)
    ]
    wire = [p.flat()[0].reshape(-1) for p in payloads]
    buffer = torch.cat(wire)
    transport.all_reduce(buffer, op="sum", tag=tag)
    out: list[torch.Tensor] = []
    offset = 0
    for payload, piece, t in zip(payloads, wire, tensors, strict=True):
        summed = buffer[offset : offset + piece.numel()]
        offset += piece.numel()
        payload.tensors[next(iter(payload.tensors))] = summed.view(piece.shape)
        out.append(compressor.decompress(payload).to(t.dtype))
    return out


def _scatter_sends_less(
    compressor: Compressor, tensors: Sequence[torch.Tensor], world: int, block: int
) -> bool:
    """Whether the reduce-scatter scheme puts fewer bytes on the wire than the all-gather.

    It does not for 2 agents (both send about one payload; padding to whole chunks and the
    second rounding only cost) nor for calls of a few blocks, where padding W chunks to whole
    blocks outweighs the saving; then the all-gather is used, with its single rounding.
    """
    size = compressor.payload_nbytes
    chunk = math.ceil(sum(t.numel() for t in tensors) / (world * block)) * block
    scatter, gather = size(chunk), [size(t.numel()) for t in tensors]
    if scatter is None or None in gather:
        return True  # sizes depend on the values: nothing to compare, do as asked
    return 2 * (world - 1) * scatter < (world - 1) * sum(g or 0 for g in gather)


def _requantized(
    transport: Transport,
    tensors: Sequence[torch.Tensor],
    compressor: Compressor,
    tag: str,
    block: int,
    key: str,
) -> list[torch.Tensor]:
    world = transport.world_size
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    # Whole blocks per chunk, so a chunk quantizes exactly as it would inside the full vector
    # and every agent's chunk payloads have the same size (all_to_all needs equal splits).
    chunk = math.ceil(flat.numel() / (world * block)) * block
    padded = torch.zeros(world * chunk, dtype=torch.float32)
    padded[: flat.numel()] = flat
    # Keys for stateful (error-feedback) codes: one residual per chunk sent, one for the partial
    # mean this agent re-encodes (stable across calls with the same first key).
    parts = [
        compressor.compress(c, key=f"{key}/chunk{j}") for j, c in enumerate(padded.split(chunk))
    ]
    received = transport.all_to_all(torch.cat([pack([p]) for p in parts]), tag=tag)
    # My chunk, as every agent sent it (mine included, decoded too: all W inputs get the same
    # treatment), summed in rank order.
    total = torch.zeros(chunk, dtype=torch.float32)
    for piece in received.chunk(world):
        total += compressor.decompress(unpack(piece, parts[:1])[0]).float()
    mean = compressor.compress(total / world, key=f"{key}/mean")
    gathered = transport.all_gather(pack([mean]), tag=tag)
    # Everyone decodes the same W payloads (its own mean through the bytes it sent, too), so
    # the result is bitwise identical on every agent.
    means = [compressor.decompress(unpack(g, [mean])[0]).float() for g in gathered]
    whole = torch.cat(means)
    out: list[torch.Tensor] = []
    offset = 0
    for t in tensors:
        out.append(whole[offset : offset + t.numel()].view(t.shape).to(t.dtype))
        offset += t.numel()
    return out
