"""One agent's endless stream of training batches, a pure function of the step number.

The stream is the concatenation of permutations ``perm_0, perm_1, ...`` of the agent's
indices, where ``perm_e = indices[default_rng([seed, rank, e]).permutation(len(indices))]``,
and ``batch(step)`` is ``stream[step * batch_size : (step + 1) * batch_size]``. Batches are
always full: the last one of an epoch wraps into the next epoch's permutation. There is no
iterator state, so resuming at step ``s`` (after a crash or a checkpoint load) gives bitwise the
same batches as an uninterrupted run, and nothing needs saving.

Example:
    >>> import numpy as np
    >>> stream = AgentBatches(np.arange(10, 15), batch_size=4, seed=0, rank=1)
    >>> b = stream.batch(1)            # positions 4..7: last of epoch 0, first 3 of epoch 1
    >>> len(b), set(b.tolist()) <= set(range(10, 15)), stream.epoch(5)
    (4, True, 4.0)
"""

from __future__ import annotations

import numpy as np
import torch

from ddla.errors import ConfigError, DataError

__all__ = ["AgentBatches"]


class AgentBatches:
    """Deterministic, resumable batches of global sample indices for one agent.

    Args:
        indices: the agent's global sample indices (its partition), 1-D integers, non-empty.
        batch_size: samples per batch (>= 1; may exceed ``len(indices)``: the batch then spans
            several epochs).
        seed: the run seed.
        rank: the agent's rank; different ranks get different orders.

    Computing ``batch(step)`` costs O(batch_size + len(indices)) whatever ``step`` is: only the
    epochs the batch touches are permuted. The last epoch's permutation is memoised, which
    changes speed, never results.
    """

    __slots__ = ("_cache", "batch_size", "indices", "rank", "seed")

    def __init__(self, indices: np.ndarray, *, batch_size: int, seed: int, rank: int) -> None:
        if isinstance(indices, torch.Tensor):
            indices = indices.cpu().numpy()
        indices = np.asarray(indices)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise DataError(
                f"agent {rank}: indices must be a 1-D integer array, got "
                f"{indices.dtype} of shape {indices.shape}",
                help="pass one of the index arrays returned by ddla.data.partition",
            )
        if len(indices) == 0:
            raise DataError(
                f"agent {rank} has no training samples",
                help="use fewer agents or a partition that gives every agent data",
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(
                f"batch size must be an integer >= 1, got {batch_size!r}",
                help="set train.batch_size to a positive integer, e.g. 32",
            )
        if seed < 0 or rank < 0:
            raise ConfigError(
                f"seed and rank must be >= 0, got seed={seed}, rank={rank}",
                help="use a non-negative seed",
            )
        self.indices = indices.astype(np.int64, copy=True)
        self.batch_size = batch_size
        self.seed = int(seed)
        self.rank = int(rank)
        self._cache: tuple[int, np.ndarray] | None = None

    @property
    def num_samples(self) -> int:
        """Number of samples this agent holds."""
        return len(self.indices)

    def permutation(self, epoch: int) -> np.ndarray:
        """``perm_epoch``: this agent's indices in the order of epoch ``epoch``."""
        cached = self._cache
        if cached is not None and cached[0] == epoch:
            return cached[1]
        rng = np.random.default_rng([self.seed, self.rank, epoch])
        perm = self.indices[rng.permutation(len(self.indices))]
        self._cache = (epoch, perm)
        return perm

    def batch(self, step: int) -> np.ndarray:
        """The global sample indices of batch ``step`` (``int64``, length ``batch_size``)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        n = len(self.indices)
        start = step * self.batch_size
        stop = start + self.batch_size
        pieces = []
        pos = start
        while pos < stop:
            epoch, offset = divmod(pos, n)
            take = min(n - offset, stop - pos)
            pieces.append(self.permutation(epoch)[offset : offset + take])
            pos += take
        return pieces[0].copy() if len(pieces) == 1 else np.concatenate(pieces)

    def epoch(self, step: int) -> float:
        """Epochs completed before batch ``step`` (``step * batch_size / num_samples``)."""
        return step * self.batch_size / len(self.indices)

    def __repr__(self) -> str:
        return (
            f"AgentBatches(num_samples={self.num_samples}, batch_size={self.batch_size}, "
            f"seed={self.seed}, rank={self.rank})"
        )
