"""Scores of generated images, all in the eyes of aelab's fixed MNIST classifier (``evaluator.Judge``).

- ``fid``: "FID-MNIST", the Fréchet distance between Gaussians fitted to the classifier's 128-d penultimate
  features of the samples and of the training images:  |m1 - m2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
  (Heusel et al., 2017, with the MNIST classifier in place of Inception; numbers are comparable only within aelab.)
- ``confident``: the share of samples the classifier labels with probability > 0.9 (a recognisable digit).
  Alone it can mislead: the shipped MNIST classifier labels uniform noise images with probability > 0.9 too
  (all in one class, so ``class_entropy`` 0; tests/test_latent.py), as classifiers do far from their data.
- ``class_entropy``: entropy (bits) of the histogram of predicted labels; log2(10) = 3.32 when all digits
  appear equally often, 0 when every sample is the same digit (mode collapse).
- ``nn_distance``: mean L2 distance (pixels in [0, 1]) from a sample to its nearest training image; far
  below the value for real test images would mean the model copies its training set.

Real test images scored the same way give the floor of each score (``reference_floor``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy import linalg

from aelab.evaluator import Judge


@torch.no_grad()
def classifier_outputs(judge: Judge, x: torch.Tensor, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, 128) and class probabilities (N, 10) of images x: (N, 1, 28, 28) (clipped to [0, 1]), in
    batches (``Judge.batches``)."""
    judge.model.eval()
    feats, probs = [], []
    for xb in judge.batches(x, batch_size):
        f = judge.model.features(xb)
        feats.append(f.double())
        probs.append(judge.model.head(f).softmax(1).double())
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """|m1 - m2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), the 2-Wasserstein distance^2 of two Gaussians.

    Tr (S1 S2)^(1/2) = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)), a symmetric PSD matrix: stable
    even when a covariance is singular (where sqrtm of the non-symmetric product is not).
    """
    w, v = linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


@dataclass
class Reference:
    """What samples are compared with: the training images and their feature statistics."""

    judge: Judge
    train_flat: torch.Tensor  # (N, H*W) float64 in [0, 1] (float32 cdist loses ~1e-3 to cancellation)
    mu: np.ndarray
    sigma: np.ndarray

    @functools.cached_property
    def ranked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``ranking_inputs(train_flat)``, made at the first nearest-neighbour check and kept for the others."""
        return ranking_inputs(self.train_flat)

    @classmethod
    def build(cls, judge: Judge, x_train: torch.Tensor) -> Reference:
        """x_train: (N, C, H, W) in [0, 1]; the feature statistics computed (the classifier on every image)."""
        feats, _ = classifier_outputs(judge, x_train)
        return cls(judge, x_train.flatten(1).double(), feats.mean(0), np.cov(feats, rowvar=False))

    def save(self, path: Path) -> None:
        """The feature statistics as safetensors (the judge and the images are kept elsewhere)."""
        save_file({"mu": torch.from_numpy(self.mu), "sigma": torch.from_numpy(self.sigma)}, str(path))

    @classmethod
    def load(cls, judge: Judge, x_train: torch.Tensor, path: Path) -> Reference:
        """``build``'s result from statistics ``save`` wrote for the same judge and x_train, bit for bit."""
        stats = load_file(str(path))
        return cls(judge, x_train.flatten(1).double(), stats["mu"].numpy(), stats["sigma"].numpy())


def ranking_inputs(train_flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the training images in float32, their squared norms): what ``nearest_distance`` ranks by."""
    train32 = train_flat.float()
    return train32, (train32 * train32).sum(1)


def nearest_distance(x: torch.Tensor, train_flat: torch.Tensor, chunk: int = 500, candidates: int = 8,
                     ranked: tuple[torch.Tensor, torch.Tensor] | None = None) -> np.ndarray:
    """L2 distance from each x (N, C, H, W) to its nearest training image (train_flat: (M, H*W) float64).

    Two passes, as exact as one in float64 and faster on a CPU: the training images are ranked by one float32
    matrix product per chunk (|t|^2 - 2 x.t; float32's cancellation errs by about 1e-3 in a distance of 4),
    then the ``candidates`` best of that ranking are measured again in float64 and the nearest kept.  Should
    the true nearest image fall outside them, the answer still lies within twice the ranking's error of it.
    ranked: ``ranking_inputs(train_flat)`` computed once by a caller that asks again (``Reference.ranked``)."""
    train32, norms = ranked if ranked is not None else ranking_inputs(train_flat)
    out = []
    for xb in x.split(chunk):
        q = xb.flatten(1).clamp(0, 1).double()
        ranking = norms - 2 * (q.float() @ train32.T)  # (n, M): |x - t|^2 - |x|^2, in float32
        best = ranking.topk(min(candidates, len(train_flat)), dim=1, largest=False).indices  # (n, k)
        out.append((train_flat[best] - q[:, None]).norm(dim=2).min(1).values)
    return torch.cat(out).numpy()


def sample_scores(ref: Reference, x: torch.Tensor, n_nearest: int = 1000) -> dict[str, float]:
    """Scores of images x: (N, 1, 28, 28); the nearest-neighbour check uses the first ``n_nearest``."""
    feats, probs = classifier_outputs(ref.judge, x)
    hist = np.bincount(probs.argmax(1), minlength=probs.shape[1]) / len(probs)
    nz = hist[hist > 0]
    return {
        "fid": frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), ref.mu, ref.sigma),
        "confident": float((probs.max(1) > 0.9).mean()),
        "class_entropy": float(0.0 - (nz * np.log2(nz)).sum()),
        "nn_distance": float(nearest_distance(x[:n_nearest], ref.train_flat, ranked=ref.ranked).mean()),
    }
