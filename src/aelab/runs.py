"""What every run records next to its output: config, seed, library versions, data hashes, command."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from aelab.io import atomic_write_json

PACKAGES = ("aelab", "torch", "numpy", "scipy", "scikit-learn", "matplotlib", "safetensors")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment() -> dict[str, Any]:
    import torch

    return {
        "versions": versions(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def record(run_dir: str | Path, *, config: dict[str, Any], seed: int | None, data: dict[str, str],
           name: str = "run.json") -> Path:
    """Write ``run_dir/name``: everything needed to reproduce the run from its folder alone.

    data: dataset description -> content sha256 (``Dataset.content_hash``).
    """
    path = Path(run_dir) / name
    atomic_write_json(path, {
        "command": sys.argv,
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": config,
        "seed": seed,
        "data": data,
        "environment": environment(),
    })
    return path
