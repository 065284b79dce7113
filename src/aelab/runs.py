"""What every run records next to its output: config, seed, library versions, data hashes, command."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from contextlib import contextmanager
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


_command: list[str] | None = None  # set by ``running``: the command line of the CLI call in progress


def command() -> list[str]:
    """The command line of what is running, as recorded in run.json: ``aelab ...`` when the CLI was called from
    Python (``aelab.cli.main(argv)``), else sys.argv."""
    return list(_command) if _command is not None else list(sys.argv)


@contextmanager
def running(argv: list[str]):
    """Within the block, ``command()`` is ``argv`` (the CLI's own call, which sys.argv need not show)."""
    global _command
    before, _command = _command, list(argv)
    try:
        yield
    finally:
        _command = before


def processor() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    import torch

    return {
        "versions": versions(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": processor(),
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
        "command": command(),
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": config,
        "seed": seed,
        "data": data,
        "environment": environment(),
    })
    return path


def amend(run_dir: str | Path, name: str = "run.json", **fields: Any) -> Path:
    """Add ``fields`` to an existing run record (e.g. the precision a training run measured and used)."""
    import json

    path = Path(run_dir) / name
    atomic_write_json(path, {**json.loads(path.read_text()), **fields})
    return path


class RunLock:
    """One writer per run folder: ``with RunLock(folder): ...`` holds an exclusive lock on folder/.aelab.lock.

    The lock is the kernel's (flock), so it dies with its process: a lock file left by a killed run is simply
    taken over (and said so).  A second live writer is refused at once, naming the running one.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".aelab.lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl
        import json

        from aelab.errors import ConfigError, warn

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ConfigError(f"cannot create run folder {self.path.parent} ({e.strerror}); choose a writable "
                              "--out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(f"run folder {self.path.parent} is in use by another aelab run ({holder}); wait for "
                              "it to finish or choose another --out") from None
        previous = _read_holder(fd)
        if previous != "unknown":
            warn(f"taking over the lock of a run that is no longer running ({previous})")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": platform.node(), "command": " ".join(command()),
                                  "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # an empty lock file: released cleanly
            os.close(self._fd)         # closing releases the flock
            self._fd = None


def _read_holder(fd: int) -> str:
    import json

    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        return f"pid {info['pid']} on {info['host']} since {info['since']}: {info['command']}"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "unknown"
