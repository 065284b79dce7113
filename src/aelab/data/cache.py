"""The aelab cache: ``$AELAB_CACHE`` or ``~/.cache/aelab``.

Arrays are stored as a compressed ``.npz`` (never pickle) beside a JSON record with the file's own
sha256, so a damaged cache entry is detected instead of silently used.  Writers hold a file lock and
write atomically, so two processes filling the cache at once both end up with the same good file.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from filelock import FileLock

from aelab.errors import DataError
from aelab.io import atomic_save, atomic_write_json, sha256_file


def cache_dir() -> Path:
    root = os.environ.get("AELAB_CACHE") or Path.home() / ".cache" / "aelab"
    return Path(root)


@contextmanager
def locked(key: str, timeout: float = 600):
    """Hold the cache's lock for ``key`` (blocks while another process fills the same entry)."""
    path = cache_dir() / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=timeout):
        yield


def paths(key: str) -> tuple[Path, Path]:
    return cache_dir() / f"{key}.npz", cache_dir() / f"{key}.json"


def save_arrays(key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` compressed, then the record naming the file's sha256 (the record is the commit)."""
    npz, rec = paths(key)
    atomic_save(npz, lambda tmp: _savez(tmp, arrays))
    atomic_write_json(rec, {**meta, "file": npz.name, "sha256": sha256_file(npz)})


def _savez(tmp: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the temp name
        np.savez_compressed(f, **arrays)


def load_arrays(key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """The cached arrays and record for ``key``, None when absent; a damaged entry raises DataError."""
    npz, rec = paths(key)
    if not rec.exists():
        return None
    try:
        meta = json.loads(rec.read_text())
        expected = meta["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"cache record {rec} is unreadable ({e}); delete {rec} and {npz} to rebuild it") from None
    if not npz.exists() or sha256_file(npz) != expected:
        raise DataError(f"cache file {npz} is missing or damaged (sha256 differs from {rec.name}); "
                        f"delete {npz} and {rec} to rebuild it")
    try:
        with np.load(npz, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, meta
    except Exception as e:  # noqa: BLE001  (zipfile, zlib and numpy each raise their own kind)
        raise DataError(f"cache file {npz} cannot be read ({type(e).__name__}) although its checksum matches "
                        f"{rec.name}; delete {npz} and {rec} to rebuild it") from None
