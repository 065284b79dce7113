"""Every user mistake is one line on stderr and exit status 2: the real CLI over 50 bad inputs (numbers out
of range, malformed specs, paths that cannot be written, damaged, truncated, oversized or mislabelled files
of every kind aelab reads), checking the status, the single line, and that no file that was fine before
has changed."""

import gzip
import hashlib
import json
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from aelab.cli import main
from aelab.data import idx
from aelab.io import sha256_file

pytestmark = pytest.mark.xdist_group("bad-inputs")


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height pixels, with one tiny IDAT chunk (no pixel memory needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _idx_folder(root: Path, name: str, damage=None) -> Path:
    d = root / name
    d.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        idx.write(d / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        idx.write(d / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    if damage:
        damage(d / "t10k-images-idx3-ubyte")
    return d


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_cache):
    """Good and bad files of every kind, made once."""
    w = tmp_path_factory.mktemp("world")
    (w / "a-file").write_text("not a folder")
    # a finished training run, and damaged copies of it
    good = w / "run"
    assert main(["train", "--dataset", "synthetic", "--n-train", "200", "--d", "4", "--epochs", "1", "--out",
                 str(good), "--quiet"]) == 0
    ckpt = "checkpoints/epoch-0001"

    def variant(name, change):
        d = w / name
        shutil.copytree(good, d)
        change(d)
        return d

    variant("run-json-truncated", lambda d: (d / "run.json").write_text('{"config": {"mod'))
    variant("run-no-checkpoint", lambda d: shutil.rmtree(d / "checkpoints"))
    variant("run-record-truncated", lambda d: (d / f"{ckpt}.json").write_text('{"epoch": 1, "weights": "ep'))
    variant("run-weights-truncated", lambda d: (d / f"{ckpt}.safetensors").write_bytes(
        (d / f"{ckpt}.safetensors").read_bytes()[:100]))

    def pickled(d):
        weights, meta = d / f"{ckpt}.safetensors", d / f"{ckpt}.json"
        weights.write_bytes(pickle.dumps({"model.encoder.0.weight": [1, 2, 3]}))
        rec = json.loads(meta.read_text())
        rec["sha256"] = sha256_file(weights)     # the record made to match: the content must still be refused
        meta.write_text(json.dumps(rec))

    variant("run-pickle", pickled)

    def wrong_record(d):
        rec = json.loads((d / f"{ckpt}.json").read_text())
        rec["optimizer"] = "none"
        (d / f"{ckpt}.json").write_text(json.dumps(rec))

    variant("run-record-mislabelled", wrong_record)
    # IDX folders
    _idx_folder(w, "idx-good")
    _idx_folder(w, "idx-truncated", lambda p: p.write_bytes(p.read_bytes()[:5000]))
    _idx_folder(w, "idx-overflow", lambda p: p.write_bytes(bytes([0, 0, 8, 4]) + b"\xff\xff\xff\xff" * 4))
    _idx_folder(w, "idx-magic", lambda p: p.write_bytes(b"GIF89a" + p.read_bytes()[6:]))
    _idx_folder(w, "idx-trailing", lambda p: p.write_bytes(p.read_bytes() + b"\0\0\0"))
    _idx_folder(w, "idx-gz-corrupt", lambda p: (p.with_name(p.name + ".gz").write_bytes(
        gzip.compress(p.read_bytes())[:300]), p.unlink()))
    _idx_folder(w, "idx-gz-bomb", lambda p: (p.with_name(p.name + ".gz").write_bytes(
        gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 100000, 4096, 4096))), p.unlink()))
    _idx_folder(w, "idx-count", lambda p: idx.write(p, np.zeros((7, 28, 28), np.uint8)))
    # image folders
    (w / "img-bomb" / "cat").mkdir(parents=True)
    (w / "img-bomb" / "dog").mkdir()
    _png_header_only(w / "img-bomb" / "cat" / "huge.png", 30000, 30000)
    _png_header_only(w / "img-bomb" / "dog" / "also.png", 30000, 30000)
    (w / "img-text").mkdir()
    for i in range(3):
        (w / "img-text" / f"{i}.png").write_text("this is not a png")
    (w / "img-empty").mkdir()
    # aelab caches: a damaged file whose checksum record was made to match it, an unreadable record
    for name, npz, rec in (("cache-damaged", b"PK\x03\x04 not really a zip", None),
                           ("cache-badrecord", b"whatever", "{\"sha256\": ")):
        (w / name).mkdir()
        (w / name / "mnist-v1.npz").write_bytes(npz)
        (w / name / "mnist-v1.json").write_text(rec or json.dumps({"sha256": hashlib.sha256(npz).hexdigest(),
                                                                   "file": "mnist-v1.npz", "origin": "x"}))
    # config files
    (w / "bad.toml").write_text("[train\nepochs = 2\n")
    (w / "unknown.toml").write_text("[train]\nepochs = 2\nwarmup = 3\n")
    (w / "wrongtype.toml").write_text("[train]\nepochs = \"many\"\n")
    (w / "badsection.toml").write_text("[optimizer]\nlr = 1\n")
    (w / "binary.toml").write_bytes(b"\xff\xfe\x00\x01" * 10)
    return w


CASES = [
    # numbers out of range, malformed values
    ("train --out {w}/o --batch-size 0", "train.batch_size"),
    ("train --out {w}/o --epochs -1", "train.epochs"),
    ("train --out {w}/o --lr -0.001", "train.lr"),
    ("train --out {w}/o --lr nan", "train.lr"),
    ("train --out {w}/o --seed -3", "train.seed"),
    ("train --out {w}/o --d 0", "model.d"),
    ("train --out {w}/o --beta 2", "model.beta"),
    ("train --out {w}/o --model gan", "model.kind"),
    ("train --out {w}/o --spec 32:5", "32:5"),
    ("train --out {w}/o --spec 32:5:0", "out of range"),
    ("train --out {w}/o --spec 8:40:1 --dataset synthetic", "smaller than the kernel"),
    ("train --out {w}/o --device tpu", "train.device"),
    ("train --out {w}/o --dataset cifar", "data.name"),
    ("train --out {w}/o --n-train 0", "data.n_train"),
    ("train --out {w}/o --epochs many", "--epochs"),
    ("train --out {w}/o --dataset idx", "data.data_dir"),
    ("sweep --out {w}/o --dims 2,x", "sweep.dims"),
    ("sweep --out {w}/o --set sweep.dims=", "sweep.dims"),
    ("latent --out {w}/o --set latent.densities=kde", "latent.densities"),
    ("latent --out {w}/o --set latent.vaes=x@8", "latent.vaes"),
    ("latent --out {w}/o --set latent.n_samples=1", "latent.n_samples"),
    ("reproduce --dry-run --set train.lrr=1", "train.lrr"),
    ("reproduce --dry-run --set epochs=2", "section.key=value"),
    ("reproduce --dry-run --preset slow", "unknown preset"),
    ("interpolate --out {w}/i.png", "exactly one of --run and --pca"),
    ("interpolate --pca 8 --pairs 0 --out {w}/i.png", "--pairs"),
    ("model summary --image-size 0", "--image-size"),
    ("nosuchcommand", "No such command"),
    # paths that cannot be written or read
    ("train --out {w}/a-file --dataset synthetic", "is a file"),
    ("train --out {w}/a-file/sub --dataset synthetic", "a-file"),
    ("reproduce --out {w}/a-file/sub --set data.name=synthetic", "a-file"),
    ("data show synthetic --out {w}/a-file/grid.png", "a-file"),
    ("reproduce --dry-run --config {w}/missing.toml", "missing.toml"),
    ("reproduce --dry-run --config {w}", "cannot read config file"),
    # config files: malformed, unknown keys, wrong types, not text
    ("reproduce --dry-run --config {w}/bad.toml", "not valid TOML"),
    ("reproduce --dry-run --config {w}/unknown.toml", "train.warmup"),
    ("reproduce --dry-run --config {w}/wrongtype.toml", "train.epochs"),
    ("reproduce --dry-run --config {w}/badsection.toml", "optimizer"),
    ("reproduce --dry-run --config {w}/binary.toml", "binary.toml"),
    # IDX files: truncated, overflowing, mislabelled, corrupt, oversized
    ("data info idx --data-dir {w}/idx-truncated", "truncated"),
    ("data info idx --data-dir {w}/idx-overflow", "more than aelab reads"),
    ("data info idx --data-dir {w}/idx-magic", "not an IDX file"),
    ("data info idx --data-dir {w}/idx-trailing", "trailing bytes"),
    ("data info idx --data-dir {w}/idx-gz-corrupt", "corrupt gzip"),
    ("data info idx --data-dir {w}/idx-gz-bomb", "more than aelab reads"),
    ("data info idx --data-dir {w}/idx-count", "t10k"),
    ("data info idx --data-dir {w}/no-such-folder", "no-such-folder"),
    # the cache
    ("CACHE=cache-damaged data info mnist", "cannot be read"),
    ("CACHE=cache-badrecord data info mnist", "unreadable"),
    # images: oversized header, not images, none
    ("data info images --data-dir {w}/img-bomb", "900000000 pixels"),
    ("data info images --data-dir {w}/img-text", "cannot read image"),
    ("data info images --data-dir {w}/img-empty", "no PNG/JPEG images"),
    # run folders, checkpoints and their records
    ("interpolate --run {w}/run-json-truncated --out {w}/i.png", "not an aelab training run"),
    ("interpolate --run {w}/run-no-checkpoint --out {w}/i.png", "no complete checkpoint"),
    ("interpolate --run {w}/no-such-run --out {w}/i.png", "not an aelab training run"),
    ("sample --run {w}/run-record-truncated --out {w}/s.png -n 10", "no complete checkpoint"),
    ("sample --run {w}/run-weights-truncated --out {w}/s.png -n 10", "no complete checkpoint"),
    ("interpolate --run {w}/run-pickle --out {w}/i.png", "not a readable safetensors file"),
    ("train --dataset synthetic --n-train 200 --d 4 --epochs 1 --out {w}/run-record-mislabelled --resume",
     "no usable optimizer state"),
    ("sample --run {w}/run --density kde --out {w}/s.png -n 10", "unknown density"),
    ("report {w}/run", "not a complete aelab reproduce folder"),
    ("docs --run {w}/run --out {w}/docs", "no results.md"),
    ("evaluator train --out {w}/e.pt", "--out must end in .safetensors"),
]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and p.name != ".aelab.lock"}


@pytest.mark.parametrize("command,named", CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_one_line_and_exit_2(world, command, named, capsys, monkeypatch):
    before = _snapshot(world)
    argv = [a.format(w=world) for a in command.split()]
    if argv[0].startswith("CACHE="):
        monkeypatch.setenv("AELAB_CACHE", str(world / argv.pop(0).removeprefix("CACHE=")))
    status = main(argv)
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("aelab: error: "), err
    assert named in err, err
    after = _snapshot(world)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing that existed was changed


def test_there_are_at_least_fifty_cases():
    assert len(CASES) >= 50
