"""Scores of any model with the encode/decode interface (autoencoders, VAEs, PCA) on a test set.

- ``mse``: mean squared error per pixel, pixels in [0, 1];
- ``loss``: the lecture's per-image loss 0.5 * sum of squared errors;
- ``psnr``: mean over images of 10 log10(1 / mse_i) dB (peak 1);
- ``class_kept`` (``digit_kept`` on MNIST): the share of reconstructions that the dataset's fixed classifier
  (``aelab.evaluator``) labels as the true class; its own test accuracy is reported beside it.

This is the one place where the loss and the MSE are computed: the trainer's per-epoch test evaluation
calls ``reconstruction_scores`` too.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from aelab.data import Dataset, to_float


class Codec(Protocol):
    """What every experiment needs of a model: z = encode(x), x_hat = decode(z)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...
    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


def _device(codec: Codec) -> torch.device:
    if isinstance(codec, nn.Module):
        return next(codec.parameters()).device
    return torch.device("cpu")


@torch.no_grad()
def reconstruct(codec: Codec, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """g(f(x)) for x: (N, C, H, W), in batches; returned on the CPU."""
    was_training = isinstance(codec, nn.Module) and codec.training
    if isinstance(codec, nn.Module):
        codec.eval()
    dev = _device(codec)
    out = torch.cat([codec.decode(codec.encode(xb.to(dev))).float().cpu() for xb in x.split(batch_size)])
    if was_training:
        codec.train()
    return out


@torch.no_grad()
def reconstruction_scores(codec: Codec, x: torch.Tensor, batch_size: int = 1000,
                          memory_format: torch.memory_format = torch.contiguous_format) -> dict[str, float]:
    """MSE per pixel, the lecture's loss per image and mean PSNR of g(f(x)) for x: (N, C, H, W) in [0, 1].

    Evaluated in batches on the codec's device; the model's train/eval mode is restored afterwards.
    """
    was_training = isinstance(codec, nn.Module) and codec.training
    if isinstance(codec, nn.Module):
        codec.eval()
    dev = _device(codec)
    sse = []                                                      # per-image sum of squared errors
    for xb in x.split(batch_size):
        xb = xb.to(dev).contiguous(memory_format=memory_format)
        x_hat = codec.decode(codec.encode(xb))
        sse.append((x_hat.float() - xb).pow(2).flatten(1).sum(1).double().cpu())
    if was_training:
        codec.train()
    return scores_from_sse(torch.cat(sse), x[0].numel())


def scores_from_sse(sse: torch.Tensor, n_pixels: int) -> dict[str, float]:
    """mse / loss / psnr from per-image sums of squared errors sse: (N,)."""
    per_image_mse = (sse / n_pixels).clamp_min(1e-12)
    return {"mse": float(sse.sum() / (len(sse) * n_pixels)), "loss": float(0.5 * sse.mean()),
            "psnr": float((10 * torch.log10(1.0 / per_image_mse)).mean())}


def scores(codec: Codec, test: Dataset, judge=None) -> dict[str, float]:
    """Reconstruction scores of ``codec`` on ``test``; with a judge (``aelab.evaluator.Judge``) also the share
    of reconstructions whose class it keeps (``class_kept``; the lecture's "digit kept" on MNIST)."""
    x = to_float(test.images)
    x_hat = reconstruct(codec, x)  # once, for both the errors and the classifier
    out = scores_from_sse((x_hat - x).pow(2).flatten(1).sum(1).double(), x[0].numel())
    if judge is not None:
        out["class_kept"] = judge.class_kept(x_hat, test.labels)
        out["classifier_accuracy"] = judge.accuracy
    return out
