"""Reader and writer of the IDX format (the official MNIST / Fashion-MNIST files), gzipped or raw.

Layout: two zero bytes, a type code, the number of dimensions n, then n big-endian uint32 sizes,
then the values in row-major order, big-endian.  Every fault is reported as a ``DataError`` that
names the file, because a truncated download is the most common way these files go wrong.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from aelab.errors import DataError

# type code -> big-endian numpy dtype
TYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF = {dt.newbyteorder("=").str[1:]: code for code, dt in TYPE_CODES.items()}
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | os.PathLike) -> bytes:
    """The IDX payload of ``path``, decompressed when it is gzipped (detected by content, not name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e.strerror}") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return _gunzip_capped(raw, str(path))
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"corrupt gzip stream in {path} ({e}); the file is truncated or damaged: "
                        "download it again") from None


# The largest IDX payload aelab will hold in memory (the official training images are 47 MB).
MAX_BYTES = 4 << 30


def _gunzip_capped(raw: bytes, name: str) -> bytes:
    """Decompress, but stop at the size the IDX header declares (and never past MAX_BYTES): a gzip bomb or
    a header claiming more than fits is refused before the memory is allocated."""
    import io

    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
        head = f.read(4)
        if len(head) < 4 or head[:2] != b"\0\0":
            return head + f.read(64)  # not IDX: parse() names the problem from the first bytes
        dims = f.read(4 * head[3])
        expected = _payload_size(head, dims, name)
        body = f.read(expected - len(head) - len(dims) + 1)  # one byte more reveals trailing data
        return head + dims + body


def _payload_size(head: bytes, dims: bytes, name: str) -> int:
    """Total bytes (header + data) an IDX header declares, computed in Python integers (no overflow)."""
    code, ndim = head[2], head[3]
    if code not in TYPE_CODES or ndim == 0 or len(dims) < 4 * ndim:
        return 4 + len(dims)  # parse() reports the exact problem
    shape = [int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim)]
    size = 4 + 4 * ndim + math.prod(shape) * TYPE_CODES[code].itemsize
    if size > MAX_BYTES:
        raise DataError(f"{name}: IDX header declares shape {tuple(shape)} ({size} bytes), more than aelab reads "
                        f"({MAX_BYTES} bytes); the header is damaged or this is not an image dataset")
    return size


def parse(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode IDX bytes to a native-endian array, validating header and length exactly."""
    if len(data) < 4:
        raise DataError(f"{name}: IDX header truncated ({len(data)} bytes, need at least 4)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{name}: not an IDX file (magic bytes {data[:2].hex()} instead of 0000)")
    code, ndim = data[2], data[3]
    if code not in TYPE_CODES:
        raise DataError(f"{name}: unknown IDX type code 0x{code:02x} "
                        f"(valid: {', '.join(f'0x{c:02x}' for c in TYPE_CODES)})")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: IDX header truncated (declares {ndim} dimensions, file has {len(data)} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = TYPE_CODES[code]
    expected = _payload_size(data[:4], data[4:header], name)  # Python ints: no overflow
    if len(data) < expected:
        raise DataError(f"{name}: truncated: shape {shape} needs {expected} bytes, file has {len(data)}; "
                        "download it again")
    if len(data) > expected:
        raise DataError(f"{name}: {len(data) - expected} unexpected trailing bytes after shape {shape} data")
    arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def read(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a native-endian numpy array."""
    return parse(read_bytes(path), str(path))


def encode(arr: np.ndarray) -> bytes:
    """IDX bytes of ``arr`` (uint8, int8, int16, int32, float32 or float64)."""
    arr = np.asarray(arr)
    key = arr.dtype.newbyteorder("=").str[1:]
    if key not in _CODE_OF:
        raise DataError(f"IDX cannot store dtype {arr.dtype}; use one of uint8, int8, int16, int32, float32, float64")
    if arr.ndim == 0 or arr.ndim > 255:
        raise DataError(f"IDX stores 1 to 255 dimensions, got {arr.ndim}")
    code = _CODE_OF[key]
    head = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    return head + np.ascontiguousarray(arr, TYPE_CODES[code]).tobytes()


def write(path: str | os.PathLike, arr: np.ndarray, compress: bool | None = None) -> None:
    """Write ``arr`` as IDX; gzipped when ``compress`` or (if None) when the name ends in ``.gz``."""
    from aelab.io import atomic_write_bytes

    path = Path(path)
    data = encode(arr)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    atomic_write_bytes(path, data)
