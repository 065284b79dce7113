"""IDX reader/writer: against hand-packed bytes (struct), round trips, and every corruption we know."""

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aelab.data import idx
from aelab.errors import DataError


def packed(code: int, shape: tuple[int, ...], fmt: str, values) -> bytes:
    """IDX bytes built by hand from the format's definition, independent of aelab.idx."""
    header = bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    return header + struct.pack(f">{len(values)}{fmt}", *values)


def test_parse_matches_hand_packed_bytes():
    vals = list(range(6))
    np.testing.assert_array_equal(idx.parse(packed(0x08, (2, 3), "B", vals)), np.arange(6).reshape(2, 3))
    arr = idx.parse(packed(0x0C, (3,), "i", [-1, 2**31 - 1, 7]))
    assert arr.dtype == np.int32 and arr.tolist() == [-1, 2**31 - 1, 7]
    arr = idx.parse(packed(0x0D, (2,), "f", [1.5, -2.25]))
    assert arr.dtype == np.float32 and arr.tolist() == [1.5, -2.25]


def test_encode_matches_hand_packed_bytes():
    a = np.array([[1, 2], [3, 400]], np.int16)
    assert idx.encode(a) == packed(0x0B, (2, 2), "h", [1, 2, 3, 400])


DTYPES = st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])


@settings(max_examples=60, deadline=None)
@given(arr=DTYPES.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))),
       gz=st.booleans())
def test_round_trip(tmp_path_factory, arr, gz):
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    idx.write(path, arr)
    back = idx.read(path)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz


GOOD = packed(0x08, (2, 2, 2), "B", list(range(8)))
CORRUPTIONS = {
    "empty file": (b"", "truncated"),
    "short header": (b"\x00\x00\x08", "truncated"),
    "bad magic": (b"\x01" + GOOD[1:], "magic"),
    "unknown type code": (GOOD[:2] + b"\x07" + GOOD[3:], "type code"),
    "zero dimensions": (GOOD[:3] + b"\x00", "0 dimensions"),
    "dims truncated": (GOOD[:9], "header truncated"),
    "data truncated": (GOOD[:-1], "truncated"),
    "trailing bytes": (GOOD + b"\x00", "trailing"),
    "corrupt gzip": (gzip.compress(GOOD)[:-6], "gzip"),
    "gzip garbage": (b"\x1f\x8b" + b"garbage" * 4, "gzip"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_files_raise_data_error_naming_the_file(tmp_path, case):
    data, needle = CORRUPTIONS[case]
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError) as e:
        idx.read(path)
    assert str(path) in str(e.value)
    assert needle in str(e.value)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        idx.read(tmp_path / "nope")


def test_unsupported_dtype_is_refused():
    with pytest.raises(DataError, match="dtype"):
        idx.encode(np.zeros(3, np.uint64))
