"""Scores of any model with the encode/decode interface (autoencoders, PCA) on a test set.

- ``mse``: mean squared error per pixel, pixels in [0, 1];
- ``loss``: the lecture's per-image loss 0.5 * sum of squared errors;
- ``psnr``: mean over images of 10 log10(1 / mse_i) dB (peak 1);
- ``digit_kept``: the share of reconstructions that the fixed MNIST classifier labels as the true digit.
  The classifier's own test accuracy is reported beside it (``classifier_accuracy``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from aelab import AelabError
from aelab.data import Dataset, cache, to_float
from aelab.io import atomic_save, atomic_write_json, sha256_file
from aelab.models.classifier import DigitClassifier


class Codec(Protocol):
    """What every experiment needs of a model: z = encode(x), x_hat = decode(z)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...
    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


@torch.no_grad()
def reconstruct(codec: Codec, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """g(f(x)) for x: (N, C, H, W), in batches, on the CPU."""
    if isinstance(codec, nn.Module):
        codec.eval()
    dev = next(codec.parameters()).device if isinstance(codec, nn.Module) else torch.device("cpu")
    return torch.cat([codec.decode(codec.encode(xb.to(dev))).cpu() for xb in x.split(batch_size)])


@torch.no_grad()
def predict(classifier: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Class probabilities (N, 10) of x: (N, 1, 28, 28) in [0, 1] (values are clipped to [0, 1] first)."""
    classifier.eval()
    return torch.cat([classifier(xb.clamp(0, 1)).softmax(1) for xb in x.split(batch_size)])


def reconstruction_scores(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, float]:
    err = (x_hat - x).pow(2).flatten(1)
    per_image_mse = err.mean(1).clamp_min(1e-12)
    return {"mse": float(err.mean()), "loss": float(0.5 * err.sum(1).mean()),
            "psnr": float((10 * torch.log10(1.0 / per_image_mse)).mean())}


@dataclass(frozen=True)
class Judge:
    """The fixed classifier plus its measured test accuracy."""

    model: DigitClassifier
    accuracy: float

    def digit_kept(self, x_hat: torch.Tensor, labels: np.ndarray) -> float:
        pred = predict(self.model, x_hat).argmax(1).numpy()
        return float((pred == labels).mean())


def scores(codec: Codec, test: Dataset, judge: Judge | None = None) -> dict[str, float]:
    x = to_float(test.images)
    x_hat = reconstruct(codec, x)
    out = reconstruction_scores(x, x_hat)
    if judge is not None:
        out["digit_kept"] = judge.digit_kept(x_hat, test.labels)
        out["classifier_accuracy"] = judge.accuracy
    return out


# --------------------------------------------------------------------------- the fixed classifier
CLASSIFIER_VERSION = "digitcnn-v1"


def train_classifier(train: Dataset, test: Dataset, *, epochs: int = 6, seed: int = 0, batch_size: int = 128,
                     progress: bool = True) -> Judge:
    """Train ``DigitClassifier`` with Adam (lr 1e-3 x 0.7 per epoch), a fixed seed, and random shifts of
    up to 2 pixels per batch (MNIST's border is empty, so a roll moves the digit without cutting it)."""
    torch.manual_seed(seed)
    model = DigitClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.7)
    x, y = to_float(train.images), torch.from_numpy(train.labels)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        for idx in tqdm(torch.randperm(len(x), generator=gen).split(batch_size), desc=f"classifier {epoch + 1}",
                        disable=not progress, leave=False):
            dy, dx = torch.randint(-2, 3, (2,), generator=gen).tolist()
            loss = nn.functional.cross_entropy(model(x[idx].roll((dy, dx), (2, 3))), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    acc = float((predict(model, to_float(test.images)).argmax(1).numpy() == test.labels).mean())
    return Judge(model, acc)


def mnist_judge(train: Dataset, test: Dataset, *, progress: bool = True, min_accuracy: float = 0.99) -> Judge:
    """The cached fixed classifier for this exact data (keyed by the data's hashes); trained on first use."""
    from safetensors.torch import load_file, save_file

    key = f"classifier-{CLASSIFIER_VERSION}-{train.content_hash()[:12]}-{test.content_hash()[:12]}"
    weights, meta = cache.cache_dir() / f"{key}.safetensors", cache.cache_dir() / f"{key}.json"
    with cache.locked(key):
        if meta.exists():
            rec = json.loads(meta.read_text())
            if weights.exists() and sha256_file(weights) == rec["sha256"]:
                model = DigitClassifier()
                model.load_state_dict(load_file(str(weights)))
                return Judge(model.eval(), rec["test_accuracy"])
        judge = train_classifier(train, test, progress=progress)
        if judge.accuracy < min_accuracy:
            raise AelabError(f"the fixed classifier reached only {judge.accuracy:.4f} test accuracy "
                             f"(< {min_accuracy}); digit-kept scores would not be trustworthy")
        atomic_save(weights, lambda tmp: save_file(judge.model.state_dict(), str(tmp)))
        atomic_write_json(meta, {"version": CLASSIFIER_VERSION, "seed": 0, "test_accuracy": judge.accuracy,
                                 "train_sha256": train.content_hash(), "test_sha256": test.content_hash(),
                                 "sha256": sha256_file(weights)})
    return judge
