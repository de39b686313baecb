"""Model fragments and their staggered schedule for streaming DiLoCo (pure, no process group).

Douillard et al. 2025, "Streaming DiLoCo with overlapping communication" (arXiv 2501.18512):
the parameters are cut into P fragments and fragment ``f`` is synchronized every H steps at
offset ``f * H // P``, so each synchronization moves about 1/P of the model and peak bandwidth
drops P-fold while the total stays that of DiLoCo.

Fragments are cut along the first dimension of each parameter (rows of a weight matrix, output
channels of a convolution), walking the parameters in order, so every fragment is a list of
contiguous row ranges whose sizes differ by at most one row — even for an MLP whose first layer
holds most of the weights — and a sliced matrix stays a matrix (PowerSGD still applies).

Example:
    >>> first, second = split_fragments([(4, 3), (4,)], 2)  # a 4x3 weight and its bias
    >>> first
    [Slice(index=0, start=0, stop=3)]
    >>> second
    [Slice(index=0, start=3, stop=4), Slice(index=1, start=0, stop=4)]
    >>> fragment_offsets(every=100, fragments=4)
    [0, 25, 50, 75]
    >>> due_fragments(step=125, every=100, fragments=4)
    [1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ddla.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Slice:
    """Rows ``start:stop`` (first dimension) of parameter number ``index``."""

    index: int
    start: int
    stop: int

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        """The slice of ``tensor`` as a view (writes go to the parameter)."""
        if tensor.dim() == 0:
            return tensor.view(1)
        return tensor[self.start : self.stop]


def _rows(shape: tuple[int, ...]) -> tuple[int, int]:
    """(number of rows, values per row) of a parameter; a scalar is one row of one value."""
    if len(shape) == 0:
        return 1, 1
    return shape[0], math.prod(shape[1:])


def split_fragments(shapes: list[tuple[int, ...]], fragments: int) -> list[list[Slice]]:
    """Cut the rows of all parameters, in order, into ``fragments`` contiguous pieces of nearly
    equal size (in values). Raises ConfigError when there are fewer rows than fragments."""
    total_rows = sum(_rows(s)[0] for s in shapes if math.prod(s) > 0)
    if fragments < 1 or fragments > total_rows:
        raise ConfigError(
            f"sync.fragments={fragments} cannot split a model with {total_rows} parameter rows",
            help="use 1 <= sync.fragments <= the number of rows (first dimensions) in the model",
        )
    total = sum(math.prod(s) for s in shapes)
    out: list[list[Slice]] = [[] for _ in range(fragments)]
    done = 0  # values assigned so far
    for index, shape in enumerate(shapes):
        rows, width = _rows(shape)
        if rows * width == 0:
            continue
        row = 0
        while row < rows:
            # The fragment the next row belongs to: by where its first value falls.
            frag = min(fragments - 1, done * fragments // total)
            boundary = math.ceil((frag + 1) * total / fragments)  # first value of frag + 1
            take = rows - row if frag == fragments - 1 else max(1, -(-(boundary - done) // width))
            take = min(take, rows - row)
            out[frag].append(Slice(index, row, row + take))
            row += take
            done += take * width
    if any(not f for f in out):
        raise ConfigError(
            f"sync.fragments={fragments} leaves an empty fragment for this model",
            help="use fewer fragments (each fragment needs at least one parameter row)",
        )
    return out


def fragment_offsets(*, every: int, fragments: int) -> list[int]:
    """Step offset (mod ``every``) at which each fragment synchronizes."""
    return [f * every // fragments for f in range(fragments)]


def due_fragments(*, step: int, every: int, fragments: int) -> list[int]:
    """Fragments that synchronize after optimizer step ``step`` (1-based; none at step 0).

    Fragment f syncs at every step ``s > 0`` with ``s % every == f * every // fragments``; with
    one fragment that is DiLoCo's H, 2H, 3H, ...
    """
    if step <= 0:
        return []
    offsets = fragment_offsets(every=every, fragments=fragments)
    return [f for f, off in enumerate(offsets) if step % every == off]
