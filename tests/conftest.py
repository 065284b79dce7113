import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per xdist worker: two workers x two threads on two cores would oversubscribe
    import torch

    torch.set_num_threads(1)


class NetworkUsed(AssertionError):
    """A test tried to reach a host other than this machine."""


def _loopback(address) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX path
        return True
    host = address[0]
    return host in ("localhost", "::1") or str(host).startswith("127.")


@pytest.fixture(scope="session", autouse=True)
def no_network():
    """The suite is hermetic: any socket connection to a non-loopback address fails the test that made it."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(method):
        def connect(self, address):
            if not _loopback(address):
                raise NetworkUsed(f"test tried to connect to {address!r}: the suite must not use the network")
            return method(self, address)
        return connect

    socket.socket.connect, socket.socket.connect_ex = guard(real_connect), guard(real_connect_ex)
    yield
    socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex


USER_CACHE = Path(os.environ.get("AELAB_CACHE") or Path.home() / ".cache" / "aelab")


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Every test runs against a private aelab cache in its session's temporary folder: the real MNIST
    arrays are copied in (read only) from the cache that `make setup` filled, and nothing a test writes
    reaches the user's own cache."""
    cache = tmp_path_factory.mktemp("aelab-cache")
    for f in USER_CACHE.glob("mnist-v1.*"):
        if f.suffix in (".npz", ".json"):
            shutil.copyfile(f, cache / f.name)
    old = os.environ.get("AELAB_CACHE")
    os.environ["AELAB_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("AELAB_CACHE", None)
    else:
        os.environ["AELAB_CACHE"] = old


@pytest.fixture(autouse=True)
def cache_stays_private(private_cache):
    """A test that changes $AELAB_CACHE must put it back: a test that dropped it once sent every later test of
    its worker to the user's own cache (evaluators and timings were written there)."""
    yield
    now = os.environ.get("AELAB_CACHE")
    assert now == str(private_cache), (
        f"this test left $AELAB_CACHE = {now!r}, not the session's private cache {str(private_cache)!r}: "
        "restore the old value (or use monkeypatch.setenv) so later tests do not write to the user's cache")


@pytest.fixture(scope="session")
def mnist_test(private_cache):
    """The real MNIST test split (from the private cache; filled from the PyPI wheel if `make setup` did not)."""
    from aelab.data import load

    return load("mnist", "test")


@pytest.fixture(scope="session")
def mnist_train(private_cache):
    from aelab.data import load

    return load("mnist", "train")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def judge():
    """The fixed MNIST classifier as it ships (``aelab/evaluators/mnist.safetensors``, hash-checked at load):
    loading it costs nothing, where training even a quick stand-in took a minute of the suite.  Its training
    recipe is tested on its own (tests/test_metrics.py: an evaluator trained once for a new dataset)."""
    from aelab.evaluator import load_judge, shipped_path

    return load_judge(shipped_path("mnist"))


@pytest.fixture
def own_timings(tmp_path, monkeypatch):
    """This test's own file of kept measurements (``aelab.timings``), empty at its start: what it times is
    measured, not read from what an earlier test kept."""
    from aelab import timings

    file = tmp_path / "timings" / "machine.json"
    monkeypatch.setattr(timings, "path", lambda: file)
    monkeypatch.setattr(timings, "_SEEN", {})
    monkeypatch.delenv(timings.ENV, raising=False)
    return file
