"""The IDX reader on real files written in tmp_path: valid, gzip, and every kind of damage."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from ddla.data.idx import read_idx
from ddla.errors import DataError


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        d.to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def test_reads_plain_uint8_images(tmp_path: Path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(idx_bytes(images, 0x08))
    got = read_idx(path, ndim=3)
    assert got.dtype == np.uint8
    assert np.array_equal(got, images)


def test_reads_gzip_big_endian_int32(tmp_path: Path):
    values = np.array([1, -2, 70000, 2**30], dtype=np.int32)
    path = tmp_path / "values-idx1-int.gz"
    path.write_bytes(gzip.compress(idx_bytes(values, 0x0C)))
    got = read_idx(path)
    assert np.array_equal(got, values)
    assert got.dtype.isnative


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x01\x02\x08\x01" + (1).to_bytes(4, "big") + b"\x00", "bad magic number 01020801"),
        (b"", "bad magic number (empty file)"),
        (b"\x00\x00\x07\x01" + (1).to_bytes(4, "big") + b"\x00", "unknown element type 0x07"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated inside its header"),
        (b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02", "is truncated"),
        (b"\x00\x00\x08\x01" + (1).to_bytes(4, "big") + b"\x01\x02", "longer than its header"),
    ],
)
def test_malformed_file_raises_data_error_naming_it(tmp_path: Path, payload, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.help


def test_wrong_dimension_count_is_refused(tmp_path: Path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros(3, dtype=np.uint8), 0x08))
    with pytest.raises(DataError, match="declares 1 dimensions, expected 3"):
        read_idx(path, ndim=3)


def test_truncated_gzip_stream_is_refused(tmp_path: Path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    blob = gzip.compress(idx_bytes(np.arange(1000, dtype=np.uint8) % 10, 0x08))
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="corrupt gzip stream") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="cannot read IDX file"):
        read_idx(tmp_path / "absent")
