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

from contextlib import contextmanager
from typing import Protocol

import torch
from torch import nn

from aelab import kernels
from aelab.data import Dataset, to_float


class Codec(Protocol):
    """What every experiment needs of a model: z = encode(x), x_hat = decode(z)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...
    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


def _device(codec: Codec) -> torch.device:
    if isinstance(codec, nn.Module):
        return next(codec.parameters()).device
    return torch.device("cpu")


# On a CPU an evaluation batch holds about this many input values (167 MNIST digits; see ``inference_batch``)
CPU_BATCH_VALUES = 1 << 17


def inference_batch(device: torch.device, values_per_image: int) -> int:
    """Images per batch when a network evaluates images of ``values_per_image`` values (C * H * W) on ``device``.

    On a GPU 1000: fewer, larger launches.  On a CPU about 2**17 input values (167 MNIST digits), so that the
    lecture's activations (32 channels at nearly the input's size) stay small enough for glibc's malloc to serve
    them again from its heap: a batch of 1000 digits made blocks of 74 MB, which glibc takes fresh from the
    kernel (one page fault per 4 KiB, each page zeroed) for every batch, and evaluation ran 1.5-1.7x slower for it
    in a process whose allocator the trainer had not set (``aelab.recipe.keep_freed_memory``; docs/inference.json,
    written by benchmarks/inference.py)."""
    if device.type != "cpu":
        return 1000
    return max(1, min(1000, CPU_BATCH_VALUES // max(1, values_per_image)))


@contextmanager
def evaluating(codec: Codec):
    """Eval mode and, for a network on the CPU, channels_last weights (oneDNN's fast layout: inference measured
    1.8x faster than contiguous in benchmarks/run.py); yields (device, memory format for the inputs) and
    restores the model's mode and layout afterwards."""
    if not isinstance(codec, nn.Module):
        yield torch.device("cpu"), torch.contiguous_format
        return
    was_training, dev = codec.training, _device(codec)
    convs = [p for p in codec.parameters() if p.dim() == 4]
    switch = dev.type == "cpu" and bool(convs) and not convs[0].is_contiguous(memory_format=torch.channels_last)
    codec.eval()
    if switch:
        codec.to(memory_format=torch.channels_last)
    try:
        yield dev, (torch.channels_last if switch or dev.type == "cpu" and convs else torch.contiguous_format)
    finally:
        if switch:
            codec.to(memory_format=torch.contiguous_format)
        codec.train(was_training)


@torch.no_grad()
def reconstruct(codec: Codec, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """g(f(x)) for x: (N, C, H, W), in batches (``inference_batch`` unless given); returned on the CPU
    (contiguous)."""
    with evaluating(codec) as (dev, fmt):
        batch_size = batch_size or inference_batch(dev, x[0].numel())
        probe = lambda: codec.decode(codec.encode(x[:batch_size].to(dev).contiguous(memory_format=fmt)))  # noqa: E731
        with kernels.for_inference(codec, probe):
            out = [codec.decode(codec.encode(xb.to(dev).contiguous(memory_format=fmt))).float().cpu().contiguous()
                   for xb in x.split(batch_size)]
    return torch.cat(out)


@torch.no_grad()
def reconstruction_scores(codec: Codec, x: torch.Tensor, batch_size: int | None = None,
                          inputs: torch.Tensor | None = None) -> dict[str, float]:
    """MSE per pixel, the lecture's loss per image and mean PSNR of g(f(inputs)) against x: (N, C, H, W) in
    [0, 1]; inputs default to x (a restorer is scored on corrupted inputs against the clean x).

    Evaluated in batches (``inference_batch`` unless given) on the codec's device; the model's mode and layout
    are restored afterwards.
    """
    sse = []                                                      # per-image sum of squared errors
    inputs = x if inputs is None else inputs
    with evaluating(codec) as (dev, fmt):
        batch_size = batch_size or inference_batch(dev, x[0].numel())
        probe = lambda: codec.decode(codec.encode(inputs[:batch_size].to(dev).contiguous(memory_format=fmt)))  # noqa: E731
        with kernels.for_inference(codec, probe):
            for xb, ib in zip(x.split(batch_size), inputs.split(batch_size), strict=True):
                xb = xb.to(dev).contiguous(memory_format=fmt)
                x_hat = codec.decode(codec.encode(ib.to(dev).contiguous(memory_format=fmt)))
                sse.append((x_hat.float() - xb).pow(2).flatten(1).sum(1).double().cpu())
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
