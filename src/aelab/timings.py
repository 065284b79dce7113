"""Speed measurements kept per machine, so that a choice made by timing is made once and then stays.

aelab chooses a few things by timing them: the precision of a run (``recipe.measure_precision``: bf16 autocast
or fp32) and how a few layers compute (``kernels.choose``, ``kernels.for_inference``).  A ratio near its
threshold can come out on either side from one run to the next (on a Zen 4 the lecture decoder's first layer
measured 1.08x to 1.14x with its bias apart, against a threshold of 1.1x), and another choice is another
rounding: two runs of one seed on one machine then trained different weights.  So each measurement is made once
per machine and kept, and every later run on that machine, in this process or another, takes the kept value.

Kept in ``$AELAB_CACHE/timings/<id>.json`` (see ``aelab.data.cache``), one file per machine and code: ``id``
hashes the CPU as /proc/cpuinfo describes it (vendor, family, model, name, flags), the architecture, torch's
version and the source of the modules whose ways are timed, so a measurement is never used on another kind of
CPU, another torch, or for code that has changed since.  Each key names the measurement, the layer or model,
its input's shape, the precision and the thread count.  Processes that measure the same key at once (a study's
trainings side by side, torchrun's processes) agree: under the cache's lock the first value written is kept,
and the others take it.  Writes are atomic.  Delete the file to measure again; under ``AELAB_TIMINGS=fresh``
each process measures for itself and keeps its values in memory only (the benchmarks that time these ways).
``aelab timings`` lists what is kept, ``aelab timings --forget`` deletes it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aelab.data import cache
from aelab.io import atomic_write_json

ENV = "AELAB_TIMINGS"  # "fresh": measure in each process, keep nothing
_TIMED_MODULES = ("kernels.py", "recipe.py")  # their code is what is timed: a change of it is another measurement
_SEEN: dict[tuple[str, str], Any] = {}  # (file, key) -> value, what this process has read or measured


def machine() -> dict[str, str]:
    """What identifies this machine's speed: the CPU's description (/proc/cpuinfo's first processor on Linux,
    else the platform module's), the architecture and torch's version."""
    import torch

    info = {"machine": platform.machine(), "torch": torch.__version__, **_cpuinfo()}
    if len(info) == 2:
        info["processor"] = platform.processor()
    return info


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The fields of /proc/cpuinfo's first processor that describe the CPU (none where there is no such file)."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        return {}
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in block.splitlines() if ":" in line)}
    return {name: fields[name] for name in ("vendor_id", "cpu family", "model", "model name", "flags", "Features",
                                            "CPU part") if name in fields}


@functools.cache
def _code(modules: tuple[str, ...]) -> str:
    here = Path(__file__).parent
    return hashlib.sha256(b"".join((here / name).read_bytes() for name in modules)).hexdigest()


def path() -> Path:
    """This machine's file of kept measurements for this aelab's code."""
    ident = json.dumps({**machine(), "code": _code(_TIMED_MODULES)}, sort_keys=True)
    return cache.cache_dir() / "timings" / f"{hashlib.sha256(ident.encode()).hexdigest()[:16]}.json"


def _read(file: Path) -> dict:
    if not file.exists():
        return {}
    try:
        table = json.loads(file.read_text())
        if not isinstance(table, dict) or not isinstance(table.get("timings"), dict):
            raise ValueError("no 'timings' table")
        return table["timings"]
    except (OSError, ValueError) as e:  # a timing is cheap to take again: measure, and write the file anew
        warnings.warn(f"{file}: unreadable ({e}); measuring again and rewriting it", stacklevel=3)
        return {}


def kept(key: str, measure: Callable[[], Any]) -> Any:
    """The value kept for ``key`` on this machine; where none is, ``measure()``'s (a JSON value), kept from now
    on unless another process kept one first, in which case that one is returned.  Under ``AELAB_TIMINGS=fresh``
    the value is measured once in this process and kept in memory only."""
    fresh = os.environ.get(ENV) == "fresh"
    file = None if fresh else path()
    seen = ("this process" if fresh else str(file), key)
    if seen not in _SEEN:
        table = {} if fresh else _read(file)
        if key not in table:
            value = measure()  # outside the lock: another process's measurement must not wait for this one
            if fresh:
                table[key] = {"value": value}
            else:
                with cache.locked("timings"):
                    table = _read(file)
                    if key not in table:
                        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
                        table[key] = {"value": value, "measured": now}
                        atomic_write_json(file, {"machine": machine(), "timings": table})
        _SEEN[seen] = table[key]["value"]
    return _SEEN[seen]


def stored() -> dict[str, dict]:
    """Every measurement kept on disk for this machine and code: key -> {"value": ..., "measured": time}."""
    return _read(path())


def forget() -> bool:
    """Delete this machine's kept measurements (so that the next runs measure again); False where none were."""
    file = path()
    with cache.locked("timings"):
        existed = file.exists()
        file.unlink(missing_ok=True)
    for seen_key in [k for k in _SEEN if k[0] == str(file)]:
        del _SEEN[seen_key]
    return existed


def seen(prefix: str = "") -> dict[str, Any]:
    """What this process has measured or read so far, by key (those that start with ``prefix``)."""
    return {k: v for (_, k), v in _SEEN.items() if k.startswith(prefix)}


def tensor(x) -> tuple:
    """A measurement's input as its key names it: shape, dtype and layout (channels_last or contiguous)."""
    import torch

    layout = "channels_last" if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) else "contiguous"
    return tuple(x.shape), x.dtype, layout


def key(*parts: Any) -> str:
    """A measurement's key from its parts (names, shapes, dtypes, thread counts), as one readable string."""
    return " | ".join(str(p) for p in parts)
