"""Fuzzing: each loader of a file a user gives aelab takes 2000 generated malformed inputs (valid files with
bytes flipped, cut, inserted, or arbitrary bytes) and answers only with aelab's own errors, each within a
time bound.  Derandomised so CI cannot flake; the same inputs every run."""

import functools
import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from aelab import AelabError
from aelab.data import cache, idx
from aelab.data.sources import _read_image
from aelab.io import sha256_bytes
from aelab.models import AutoEncoder
from aelab.train import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.xdist_group("fuzz")
FUZZ = settings(max_examples=2000, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
BOUND_S = 2.0  # each input is answered within this time


@st.composite
def mutated(draw, seed: bytes):
    """``seed`` damaged by a few flips, cuts and insertions, or replaced by arbitrary bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=2 * len(seed)))
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos: pos + draw(st.integers(1, 64))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos:]
    return bytes(data)


def answered(fn) -> None:
    """fn() either succeeds or raises an AelabError, within BOUND_S seconds."""
    t0 = time.perf_counter()
    try:
        fn()
    except AelabError:
        pass
    assert time.perf_counter() - t0 < BOUND_S


IDX_SEED = idx.encode(np.arange(3 * 5 * 4, dtype=np.uint8).reshape(3, 5, 4))


@FUZZ
@given(data=mutated(IDX_SEED), gz=st.booleans())
def test_idx_reader(data, gz):
    import gzip

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f-idx3-ubyte"
        path.write_bytes(gzip.compress(data) if gz else data)
        answered(lambda: idx.read(path))


def _npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, train_images=np.zeros((2, 1, 4, 4), np.uint8), train_labels=np.zeros(2, np.int64))
    return buf.getvalue()


@FUZZ
@given(data=mutated(_npz_bytes()), record=st.sampled_from(["match", "mismatch", "garbage"]))
def test_cache_reader(data, record, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "fuzz-cache"
    root.mkdir(exist_ok=True)
    private = os.environ["AELAB_CACHE"]  # the session's private cache (conftest): put it back, never drop it
    os.environ["AELAB_CACHE"] = str(root)
    try:
        npz, rec = cache.paths("fuzz")
        npz.write_bytes(data)
        rec.write_text({"match": json.dumps({"sha256": sha256_bytes(data), "file": npz.name}),
                        "mismatch": json.dumps({"sha256": "0" * 64}), "garbage": data[:40].hex()[:13]}[record])
        answered(lambda: cache.load_arrays("fuzz"))
    finally:
        os.environ["AELAB_CACHE"] = private


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format="PNG")
    return buf.getvalue()


@FUZZ
@given(data=mutated(_png_bytes()), suffix=st.sampled_from([".png", ".jpg"]))
def test_image_loader(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(data)
        answered(lambda: _read_image(path, 28, 1))


@functools.cache
def _checkpoint_target() -> tuple[AutoEncoder, torch.optim.Adam]:
    """The model and optimizer every damaged checkpoint is loaded into: built once, since building them costs
    more than a load (8 ms a model), and whatever a load leaves in them the next load overwrites or refuses."""
    model = AutoEncoder(2, image_size=28)
    return model, torch.optim.Adam(model.parameters())


def _checkpoint_seed(root: Path) -> tuple[bytes, dict]:
    torch.manual_seed(0)
    model = AutoEncoder(2, image_size=28)
    opt = torch.optim.Adam(model.parameters())
    meta = save_checkpoint(root, 1, model, opt, {"history": []})
    return meta.with_suffix(".safetensors").read_bytes(), json.loads(meta.read_text())


@FUZZ
@given(data=st.data())
def test_checkpoint_loader(data, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "fuzz-ckpt"
    if not (root / "seed.json").exists():
        root.mkdir(exist_ok=True)
        weights, rec = _checkpoint_seed(root / "seed")
        (root / "seed.bin").write_bytes(weights)
        (root / "seed.json").write_text(json.dumps(rec))
    seed, rec = (root / "seed.bin").read_bytes(), json.loads((root / "seed.json").read_text())
    damaged = data.draw(mutated(seed))
    meta = root / "checkpoints" / "epoch-0001.json"
    meta.parent.mkdir(exist_ok=True)
    meta.with_suffix(".safetensors").write_bytes(damaged)
    if data.draw(st.booleans()):  # a record made to match the damaged file: the content itself must be checked
        meta.write_text(json.dumps({**rec, "sha256": sha256_bytes(damaged)}))
    else:
        meta.write_text(data.draw(mutated(json.dumps(rec).encode())).decode("utf-8", "replace"))
    model, optimizer = _checkpoint_target()
    answered(lambda: load_checkpoint(meta, model, optimizer))
