"""Datasets as uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``, from offline sources.

``load(name, split)`` is the one entry point; the sources are a string-keyed registry
(``SOURCES``).  Pixel scaling is the model's business, not the data's: ``to_float`` maps
uint8 ``v`` to ``v / 255`` in [0, 1], the scale every aelab model and metric uses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aelab.errors import DataError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a dataset: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    source: str
    classes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(f"{self.name}: images must be uint8 (N, C, H, W), got {self.images.dtype} "
                            f"{self.images.shape}")
        if self.labels.dtype != np.int64 or self.labels.shape != (len(self.images),):
            raise DataError(f"{self.name}: labels must be int64 ({len(self.images)},), got "
                            f"{self.labels.dtype} {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def content_hash(self) -> str:
        """sha256 over shape, pixels and labels: identical data gives the identical hash on any machine."""
        h = hashlib.sha256()
        h.update(repr(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=max(len(self.classes), int(self.labels.max(initial=-1)) + 1))

    def subset(self, n: int | None = None, indices: np.ndarray | None = None) -> Dataset:
        """The first ``n`` items, or the items at ``indices`` (in that order)."""
        sel = slice(0, n) if indices is None else np.asarray(indices)
        return Dataset(self.name, self.split, self.images[sel], self.labels[sel], self.source, self.classes)


def to_float(images: np.ndarray):
    """uint8 (N, C, H, W) -> float32 torch tensor in [0, 1] (v / 255)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)


# A source returns {"train": (images, labels), "test": (images, labels)} plus a description.
Source = Callable[..., tuple[dict[str, tuple[np.ndarray, np.ndarray]], str, tuple[str, ...]]]
SOURCES: dict[str, Source] = {}
DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str):
    def deco(fn: Source) -> Source:
        SOURCES[name] = fn
        DESCRIPTIONS[name] = description
        return fn

    return deco


def load(
    name: str,
    split: str = "train",
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    val_size: int = 0,
    seed: int = 0,
    **options,
) -> Dataset:
    """Load one split of dataset ``name``.

    split: "train", "test", or "valid".  With ``val_size > 0`` a seeded random ``val_size`` images
    of the official training set form "valid" and "train" is the rest (the test set is never touched).
    data_dir: a folder of the dataset's files (for mnist / fashion-mnist: the four official IDX files).
    download: allow the official web mirror (mnist / fashion-mnist only); never the default.
    seed: governs every random choice of the dataset (validation split, synthetic data, hold-outs).
    """
    if name not in SOURCES:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(SOURCES))}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if split == "valid" and val_size <= 0:
        raise DataError("split 'valid' needs val_size > 0 (e.g. --val-size 5000)")
    arrays, source, classes = SOURCES[name](data_dir=data_dir, download=download, seed=seed, **options)
    if split == "test":
        images, labels = arrays["test"]
    else:
        images, labels = arrays["train"]
        if val_size > 0:
            if val_size >= len(images):
                raise DataError(f"val_size {val_size} must be smaller than the training set ({len(images)})")
            perm = np.random.default_rng(seed).permutation(len(images))
            keep = np.sort(perm[:val_size] if split == "valid" else perm[val_size:])
            images, labels = images[keep], labels[keep]
    return Dataset(name, split, images, labels.astype(np.int64), source, classes)


from aelab.data import sources as _sources  # noqa: E402,F401  (fills SOURCES)
