"""A strict reader for the IDX format of MNIST and Fashion-MNIST, plain or gzip-compressed.

Format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, one byte naming the
element type, one byte giving the number of dimensions, then each dimension as a big-endian
uint32, then the elements in C order, big-endian. Every check failure raises
:class:`ddla.errors.DataError` naming the file, because a truncated download otherwise shows up
much later as a baffling reshape error or, worse, as silently shifted labels.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    >>> _ = path.write_bytes(b"\\x00\\x00\\x08\\x01" + (3).to_bytes(4, "big") + bytes([7, 0, 9]))
    >>> read_idx(path).tolist()
    [7, 0, 9]
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ddla.errors import DataError

__all__ = ["IDX_DTYPES", "read_idx"]

# Type byte -> big-endian numpy dtype, as listed in the format description.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_HELP = "re-download or reinstall the dataset files (package dataset-fashion-mnist)"


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc.strerror or exc}", help=_HELP) from exc
    # Decide by content, not by name: some mirrors ship gzip data without the .gz suffix.
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"IDX file {path} is a corrupt gzip stream: {exc}", help=_HELP) from exc
    return raw


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file into a native-endian numpy array, checking header and length.

    Args:
        path: the file, plain or gzip-compressed.
        ndim: if given, the number of dimensions the file must declare (1 for labels,
            3 for images).

    Raises:
        DataError: naming the file, for a bad magic number, unknown type, wrong number of
            dimensions, or a data length that does not match the declared dimensions.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise DataError(
            f"IDX file {path} has a bad magic number {data[:4].hex() or '(empty file)'}",
            help=_HELP,
        )
    type_code, dims_n = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise DataError(f"IDX file {path} has unknown element type 0x{type_code:02x}", help=_HELP)
    if ndim is not None and dims_n != ndim:
        raise DataError(
            f"IDX file {path} declares {dims_n} dimensions, expected {ndim}", help=_HELP
        )
    header_len = 4 + 4 * dims_n
    if len(data) < header_len:
        raise DataError(f"IDX file {path} is truncated inside its header", help=_HELP)
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims_n))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        kind = "truncated" if actual < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {kind}: dimensions {dims} need {expected} data bytes, "
            f"found {actual}",
            help=_HELP,
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)
