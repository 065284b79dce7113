"""Checkerboard artefacts of transposed convolutions, and the alternatives that avoid them.

A transposed convolution adds one translated kernel per input pixel.  With stride s, output pixel u
receives the taps j with u = i s + j d for some input i: when the kernel span is not a multiple of s,
neighbouring pixels receive different numbers of taps (the lecture's 4x4 kernel, stride 3: 1, 2 or 4).
That uneven *coverage* is where the grid pattern comes from.

The checkerboard score of a map is its relative peak-to-peak over the interior (borders cropped by the
kernel span, where a finite input thins the coverage anyway):

    score(m) = (max(m_int) - min(m_int)) / mean(|m_int|)          0 exactly when m_int is constant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from aelab.errors import ConfigError
from aelab.ops import conv_transpose_nd
from aelab.ops.shapes import ntuple


def coverage(kernel: int | Sequence[int], stride: int | Sequence[int], dilation: int | Sequence[int] = 1,
             size: int | Sequence[int] | None = None, nd: int | None = None) -> np.ndarray:
    """How many kernel taps land on each output position of a transposed convolution (1D or 2D).

    It is conv_transpose(ones input of ``size``, ones kernel) computed by the reference operator.
    size defaults to enough inputs (2 k + 2 per dimension) to show a periodic interior.
    """
    nd = nd or (len(kernel) if not isinstance(kernel, int) else 1)
    k, s, d = ntuple(kernel, nd, "kernel"), ntuple(stride, nd, "stride"), ntuple(dilation, nd, "dilation")
    size = ntuple(size if size is not None else [2 * ki + 2 for ki in k], nd, "size")
    ones = np.ones((1, 1, *size))
    return conv_transpose_nd(ones, np.ones((1, 1, *k)), stride=s, dilation=d)[0, 0]


def interior(m: np.ndarray, margin: int | Sequence[int]) -> np.ndarray:
    margin = ntuple(margin, m.ndim, "margin")
    if any(2 * g >= n for g, n in zip(margin, m.shape, strict=True)):
        raise ConfigError(f"map of shape {m.shape} has no interior after cropping {margin} from each side")
    return m[tuple(slice(g, n - g) for g, n in zip(margin, m.shape, strict=True))]


def checkerboard_score(m: np.ndarray, margin: int | Sequence[int] = 0) -> float:
    """(max - min) / mean(|.|) over the interior of ``m``: 0 for a uniform map (see module docstring)."""
    inner = interior(np.asarray(m, np.float64), margin)
    scale = np.abs(inner).mean()
    return 0.0 if scale == 0 else float((inner.max() - inner.min()) / scale)


def coverage_score(kernel: int, stride: int, dilation: int = 1) -> float:
    """Checkerboard score of a transposed convolution's coverage, over whole periods of the interior.

    (A square 2D kernel's coverage is the outer product of two 1D ones, so its pattern has the same period.)
    """
    span = dilation * (kernel - 1) + 1
    inner = interior(coverage(kernel, stride, dilation, size=2 * span + 4 * stride + 2), span)
    return checkerboard_score(inner[: len(inner) // stride * stride])


def coverage_score_2d(kernel: int, stride: int, dilation: int = 1) -> float:
    """The same score for a square kernel x kernel transposed convolution, over whole periods of its 2D map.

    With c the 1D coverage, the 2D map is c c^T, so for s not dividing k the score is
    (ceil(k/s)^2 - floor(k/s)^2) / (k/s)^2: 1.6875 for the lecture's 4x4, stride 3 (1-D: 0.75).
    """
    span = dilation * (kernel - 1) + 1
    n = 2 * span + 4 * stride + 2
    inner = interior(coverage((kernel, kernel), (stride, stride), (dilation, dilation), size=(n, n)), span)
    rows = inner.shape[0] // stride * stride
    return checkerboard_score(inner[:rows, :rows])


# --------------------------------------------------------------------------- upsamplers compared
UPSAMPLERS = ("transposed", "resize-nearest", "resize-bilinear", "pixel-shuffle", "pixel-shuffle-icnr")


@dataclass(frozen=True)
class Response:
    method: str
    output: np.ndarray   # (H, W) response to a constant input
    score: float


def upsampler(method: str, scale: int, kernel: int, seed: int = 0) -> nn.Module:
    """One channel in, one channel out, upsampling by ``scale``; random (seeded) PyTorch default init.

    transposed: ConvTranspose2d(kernel, stride=scale).  resize-*: F.interpolate then a kernel x kernel
    conv (the "resize-convolution").  pixel-shuffle: a conv to scale^2 channels, then PixelShuffle (the
    "sub-pixel convolution"); -icnr initialises those scale^2 sub-kernels identical (ICNR, Aitken et al. 2017).
    """
    with torch.random.fork_rng(devices=[]):  # seeded weights; the global RNG is left untouched
        torch.manual_seed(seed)
        return _upsampler(method, scale, kernel)


def _upsampler(method: str, scale: int, kernel: int) -> nn.Module:
    pad = kernel // 2
    if method == "transposed":
        return nn.ConvTranspose2d(1, 1, kernel, stride=scale, bias=False)
    if method in ("resize-nearest", "resize-bilinear"):
        mode = method.split("-")[1]
        conv = nn.Conv2d(1, 1, kernel, padding=pad, bias=False, padding_mode="replicate")
        return nn.Sequential(nn.Upsample(scale_factor=scale, mode=mode), conv)
    if method in ("pixel-shuffle", "pixel-shuffle-icnr"):
        conv = nn.Conv2d(1, scale * scale, kernel, padding=pad, bias=False, padding_mode="replicate")
        if method.endswith("icnr"):
            with torch.no_grad():
                conv.weight.copy_(conv.weight[:1].expand_as(conv.weight))
        return nn.Sequential(conv, nn.PixelShuffle(scale))
    raise ConfigError(f"unknown upsampler {method!r}; choose one of: {', '.join(UPSAMPLERS)}")


@torch.no_grad()
def constant_response(method: str, scale: int = 3, kernel: int = 4, size: int = 8, seed: int = 0) -> Response:
    """Feed a constant image to a random upsampler: any pattern in the interior is an artefact of the method."""
    out = upsampler(method, scale, kernel, seed)(torch.ones(1, 1, size, size))[0, 0].numpy()
    return Response(method, out, checkerboard_score(out, margin=kernel + scale))


# --------------------------------------------------------------------------- artefacts in real outputs
def power_spectrum(images: np.ndarray) -> np.ndarray:
    """Mean power spectrum |FFT2|^2 of images (N, H, W) after removing each image's mean; (H, W), DC at [0, 0]."""
    x = np.asarray(images, np.float64)
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    return (np.abs(np.fft.fft2(x)) ** 2).mean(0)


def radial_profile(spectrum: np.ndarray, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The radially averaged power spectrum: (bin centres in cycles/pixel up to 0.5*sqrt(2), mean power)."""
    h, w = spectrum.shape
    r = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    edges = np.linspace(0, r.max() + 1e-9, bins + 1)
    which = np.clip(np.digitize(r, edges) - 1, 0, bins - 1)
    total = np.bincount(which.ravel(), spectrum.ravel(), bins)
    count = np.maximum(np.bincount(which.ravel(), minlength=bins), 1)
    return (edges[:-1] + edges[1:]) / 2, total / count


def stride_power_share(images: np.ndarray, stride: int) -> float:
    """Share of the images' power (DC excluded) at the stride frequencies k/stride (k = 1 .. stride - 1, cycles per
    pixel) along either axis: where a stride-s upsampler's grid puts its energy.  A pure checkerboard
    (-1)^(i+j) has share 1 for stride 2; a smooth blob has almost none; white noise has the share of
    frequency bins on those rows and columns."""
    if stride < 2:
        raise ConfigError(f"stride must be >= 2 to have stride frequencies, got {stride}")
    spec = power_spectrum(images)
    h, w = spec.shape
    targets = {min(k / stride, 1 - k / stride) for k in range(1, stride)}   # folded into [0, 0.5]

    def near(freqs: np.ndarray, n: int) -> np.ndarray:
        return np.any([np.abs(np.abs(freqs) - t) <= 0.5 / n for t in targets], axis=0)

    mask = near(np.fft.fftfreq(h), h)[:, None] | near(np.fft.fftfreq(w), w)[None, :]
    total = spec.sum() - spec[0, 0]
    return float(spec[mask].sum() / total) if total > 0 else 0.0
