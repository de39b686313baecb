"""``gpt``: a small decoder-only transformer language model (nanoGPT-like).

Pre-norm blocks (LayerNorm -> causal self-attention -> residual, LayerNorm -> 4x GELU MLP ->
residual), learned positional embeddings, a final LayerNorm, and the output projection tied
to the token embedding (Press & Wolf 2017, "Using the Output Embedding to Improve Language
Models"; as in GPT-2 and Karpathy's nanoGPT). Attention is
:func:`torch.nn.functional.scaled_dot_product_attention` with ``is_causal=True``.
Initialisation follows GPT-2: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers).

The tied weight is one parameter (the head multiplies by ``wte.weight``, it is not a second
module), so the state dict holds no aliased tensors: safetensors export, averaging and every
strategy see each weight once. ``model.tie=false`` gives the head its own weight
(``head.weight``), which pipeline stages need: the embedding sits in the first stage, the
head in the last, and one weight cannot live on two agents (refused in one line when tied).

Pipeline stages (``model.stages``): the layers are ``embed`` (token + position embeddings),
``blocks.0`` .. ``blocks.{L-1}`` and ``head`` (final LayerNorm and output projection);
:meth:`GPT.pipeline_layers` lists them for the planner, :meth:`GPT.pipeline_stage` builds the
module of consecutive layers a stage holds, whose state keys are the whole model's.

Sizes come from the config and the dataset: width ``model.hidden``, ``model.layers`` blocks,
``model.heads`` heads; context = the dataset's window length (``data.context``), vocabulary =
its ``num_classes`` (256 byte tokens).

Example:
    >>> import torch
    >>> from ddla.models import ModelConfig, build_model
    >>> m = build_model(ModelConfig(name="gpt", hidden=32, layers=2, heads=4),
    ...                 input_shape=(16,), num_classes=256)
    >>> m(torch.zeros(3, 16, dtype=torch.long)).shape
    torch.Size([3, 16, 256])
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ddla.errors import ConfigError
from ddla.models.config import ModelConfig

__all__ = ["GPT", "gpt"]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions <= t."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Token ids ``[B, T]`` (int) -> next-token logits ``[B, T, vocab]``; ``T <= context``."""

    def __init__(
        self, *, vocab: int, context: int, width: int, layers: int, heads: int, tie: bool = True
    ) -> None:
        super().__init__()
        self.context, self.tie = context, tie
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        if not tie:
            self.head = nn.Linear(width, vocab, bias=False)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                # The two projections that write into the residual stream (attention out,
                # MLP out) are scaled so the stream's variance does not grow with depth.
                residual = name.endswith(("attn.proj.weight", "mlp.2.weight"))
                std = 0.02 / math.sqrt(2 * layers) if residual else 0.02
                nn.init.normal_(p, mean=0.0, std=std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = _embed(self, idx)
        for block in self.blocks:
            x = block(x)
        return _head(self, x)

    def pipeline_layers(self) -> list[tuple[str, nn.Module]]:
        """The consecutive layers pipeline stages are cut from (``embed``, ``blocks.i``,
        ``head``), each a module that runs that layer (for parameter counts and timing)."""
        blocks = [(f"blocks.{i}", b) for i, b in enumerate(self.blocks)]
        return [("embed", GPTStage(self, ["embed"])), *blocks, ("head", GPTStage(self, ["head"]))]

    def pipeline_stage(self, names: list[str]) -> nn.Module:
        """The module of consecutive layers ``names`` (of :meth:`pipeline_layers`)."""
        return GPTStage(self, names)

    def num_parameters(self) -> int:
        """Parameter count (the tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())


def _embed(m: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    if idx.dim() != 2:
        raise ValueError(f"gpt takes token ids [batch, time], got shape {tuple(idx.shape)}")
    t = idx.shape[1]
    if t > m.wpe.num_embeddings:
        raise ValueError(f"gpt context is {m.wpe.num_embeddings} tokens, got {t}")
    pos = torch.arange(t, device=idx.device)
    return m.wte(idx.long()) + m.wpe(pos)


def _head(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # The output projection: the token embedding itself when tied.
    weight = m.head.weight if hasattr(m, "head") else m.wte.weight
    return F.linear(m.ln_f(x), weight)


class GPTStage(nn.Module):
    """Consecutive layers of a :class:`GPT` (``embed``, ``blocks.i``, ``head``) as one module,
    holding the GPT's own submodules under their own names, so its state keys are the GPT's
    (``blocks.2.ln1.weight``). A tied head needs ``wte``, so it is held only with ``embed``."""

    def __init__(self, gpt: GPT, names: list[str]) -> None:
        super().__init__()
        self.names = list(names)
        if "embed" in names:
            self.wte, self.wpe = gpt.wte, gpt.wpe
        picked = [n.split(".", 1)[1] for n in names if n.startswith("blocks.")]
        self.blocks = nn.ModuleDict({i: gpt.blocks[int(i)] for i in picked})
        if "head" in names:
            if gpt.tie and "embed" not in names:
                raise ConfigError(
                    "model gpt ties its output projection to the token embedding, so the first "
                    "and last pipeline stage would share one weight",
                    help="set model.tie=false to split gpt into stages",
                )
            self.ln_f = gpt.ln_f
            if not gpt.tie:
                self.head = gpt.head
            elif "embed" not in names:
                self.wte = gpt.wte

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "embed" in self.names:
            x = _embed(self, x)
        for block in self.blocks.values():
            x = block(x)
        return _head(self, x) if "head" in self.names else x


def gpt(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Zoo entry: ``input_shape=(context,)``, ``num_classes`` = vocabulary size."""
    if len(input_shape) != 1:
        raise ConfigError(
            f"model gpt needs token windows [N, context], got sample shape {input_shape}",
            help="train gpt on a text dataset: data.dataset=python-stdlib or text:PATH",
        )
    if config.hidden % config.heads:
        raise ConfigError(
            f"model.hidden ({config.hidden}) must be a multiple of model.heads ({config.heads})",
            help="e.g. model.hidden=256 with model.heads=4",
        )
    return GPT(
        vocab=num_classes,
        context=input_shape[0],
        width=config.hidden,
        layers=config.layers,
        heads=config.heads,
        tie=config.tie,
    )
