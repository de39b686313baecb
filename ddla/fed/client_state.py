"""Per-client vectors kept on disk, not in memory: one row of D fp32 values per client.

SCAFFOLD keeps a control variate c_i for every client; at M = 10,000 clients and D = 200k
parameters that is 8 GB, so it cannot be resident. The store is one sparse file per agent
holding its home clients' rows (client ``c`` is row ``c // world`` of agent ``c % world``);
rows are read and written with ``pread``/``pwrite``, so memory holds only the row in use and
disk holds only rows ever written (a row never written reads as zeros, SCAFFOLD's c_i = 0).

Example:
    >>> import tempfile, torch
    >>> with tempfile.TemporaryDirectory() as d:
    ...     store = ClientStore(f"{d}/c.f32", rows=1000, dim=3)
    ...     store.write(7, torch.tensor([1.0, 2.0, 3.0]))
    ...     store.read(7).tolist(), store.read(8).tolist()
    ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


class ClientStore:
    """``rows`` × ``dim`` fp32 vectors in a sparse file at ``path`` (created empty)."""

    def __init__(self, path: str | Path, *, rows: int, dim: int) -> None:
        self.path, self.rows, self.dim = Path(path), rows, dim
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._row_bytes = dim * 4
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self._fd, rows * self._row_bytes)  # sparse: no blocks until written

    def _check(self, row: int) -> None:
        if not 0 <= row < self.rows:
            raise IndexError(f"client row {row} out of range [0, {self.rows})")

    def read(self, row: int) -> torch.Tensor:
        """Row ``row`` as a new fp32 tensor (zeros if never written)."""
        self._check(row)
        raw = os.pread(self._fd, self._row_bytes, row * self._row_bytes)
        return torch.from_numpy(np.frombuffer(raw, dtype=np.float32).copy())

    def write(self, row: int, value: torch.Tensor) -> None:
        """Store ``value`` (D elements) as row ``row``."""
        self._check(row)
        data = value.detach().reshape(-1).to(torch.float32).numpy().tobytes()
        if len(data) != self._row_bytes:
            raise ValueError(f"row has {len(data) // 4} values, the store holds {self.dim}")
        os.pwrite(self._fd, data, row * self._row_bytes)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()
