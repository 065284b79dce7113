"""Corruptions for restoration: composable, seeded transforms of images x: (N, C, H, W) in [0, 1].

A corruption is written ``name:parameter``; ``+`` chains them, applied left to right:

    noise:0.5          additive Gaussian noise, sigma 0.5, then clipped to [0, 1]
    noise-raw:0.5      the same without clipping (values leave [0, 1]; clipping changes the noise's statistics)
    saltpepper:0.2     each pixel independently set to 0 or 1 (equally likely) with probability 0.2
    rect:0.25          one random rectangle covering 25 % of the image set to 0 (occlusion, inpainting)
    down:2 / down:4    average-pooled by 2 or 4, then nearest-upsampled back (super-resolution's input)
    blur:1.5           Gaussian blur, sigma 1.5 pixels (scipy.ndimage.gaussian_filter, mode "nearest")

    parse("noise:0.3+blur:1")(x, seed=0)

Each corruption draws from its own generator seeded by (seed, position in the chain): the same seed gives the
same corrupted images, and batches drawn afresh each step use a new seed per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from aelab.errors import ConfigError


@dataclass(frozen=True)
class Kind:
    """One corruption: its accepted parameter range and its function (x, parameter, generator) -> y."""

    accepted: str
    valid: Callable[[float], bool]
    apply: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


def _noise(clip: bool):
    def apply(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
        y = x + sigma * torch.randn(x.shape, generator=gen)
        return y.clamp(0, 1) if clip else y
    return apply


def _salt_pepper(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    hit = torch.rand(x.shape, generator=gen) < p
    salt = torch.rand(x.shape, generator=gen) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


def _rect(x: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """A rectangle of round(share * H * W) pixels, as square as the image allows, at a random place per image."""
    n, _, h, w = x.shape
    area = max(1, round(share * h * w))
    rh = min(h, max(1, round(math.sqrt(area * h / w))))
    rw = min(w, max(1, round(area / rh)))
    y = x.clone()
    tops = torch.randint(0, h - rh + 1, (n,), generator=gen)
    lefts = torch.randint(0, w - rw + 1, (n,), generator=gen)
    for i in range(n):
        y[i, :, tops[i]: tops[i] + rh, lefts[i]: lefts[i] + rw] = 0
    return y


def _down(x: torch.Tensor, k: float, gen: torch.Generator) -> torch.Tensor:
    k = int(k)
    if x.shape[2] % k or x.shape[3] % k:
        raise ConfigError(f"down:{k} needs image sides divisible by {k}, got {x.shape[2]}x{x.shape[3]}")
    return F.interpolate(F.avg_pool2d(x, k), scale_factor=k, mode="nearest")


def _blur(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    from scipy.ndimage import gaussian_filter

    y = gaussian_filter(x.double().numpy(), sigma=(0, 0, sigma, sigma), mode="nearest")
    return torch.from_numpy(y).to(x.dtype)


KINDS: dict[str, Kind] = {
    "noise": Kind("sigma in (0, 1]", lambda v: 0 < v <= 1, _noise(clip=True)),
    "noise-raw": Kind("sigma in (0, 1]", lambda v: 0 < v <= 1, _noise(clip=False)),
    "saltpepper": Kind("p in (0, 1)", lambda v: 0 < v < 1, _salt_pepper),
    "rect": Kind("share in (0, 1)", lambda v: 0 < v < 1, _rect),
    "down": Kind("factor 2 or 4", lambda v: v in (2, 4), _down),
    "blur": Kind("sigma in (0, 5]", lambda v: 0 < v <= 5, _blur),
}


OCCLUDING = ("rect", "saltpepper")  # steps that overwrite pixels (an inpainting method may be told where)


@dataclass(frozen=True)
class Corruption:
    """A chain of (name, parameter); ``corruption(x, seed)`` -> corrupted copy of x: (N, C, H, W)."""

    steps: tuple[tuple[str, float], ...]

    def __call__(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        if x.ndim != 4:
            raise ConfigError(f"corruptions take images (N, C, H, W), got shape {tuple(x.shape)}")
        y = x.float()
        for i, (name, value) in enumerate(self.steps):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
            y = KINDS[name].apply(y, value, gen)
        return y

    def known_mask(self, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor | None:
        """The pixels that the occluding steps (rect, saltpepper) of ``self(x, seed)`` overwrote, for an x of
        ``shape``: what an inpainting method is told (the draws do not depend on x, so a constant image
        replays them).  None when no step occludes."""
        mask = None
        for i, (name, value) in enumerate(self.steps):
            if name in OCCLUDING:
                gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
                probe = torch.full(shape, 0.5)
                hit = KINDS[name].apply(probe, value, gen) != 0.5
                mask = hit if mask is None else mask | hit
        return mask

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.steps)

    def __str__(self) -> str:
        return "+".join(f"{name}:{value:g}" for name, value in self.steps)


@dataclass(frozen=True)
class Mixture:
    """The blind setting: each image gets one corruption drawn at random from ``parts``."""

    parts: tuple[Corruption, ...]

    def __call__(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + 999)
        which = torch.randint(len(self.parts), (len(x),), generator=gen)
        y = x.float().clone()
        for k, part in enumerate(self.parts):
            chosen = which == k
            if chosen.any():
                y[chosen] = part(x[chosen], seed * 31 + k)
        return y

    def __str__(self) -> str:
        return "blind"


def parse(text: str) -> Corruption | Mixture:
    """'noise:0.5', 'rect:0.25+noise:0.1', ... or 'blind' (a random one of ``BLIND`` per image); an unknown
    name or a value out of range names what is accepted."""
    if str(text).strip() == "blind":
        return Mixture(tuple(parse(c) for c in BLIND))
    steps = []
    for item in filter(None, (t.strip() for t in str(text).split("+"))):
        name, sep, value_text = item.partition(":")
        if name not in KINDS:
            raise ConfigError(f"unknown corruption {name!r} in {text!r}; choose one of: "
                              + ", ".join(f"{k}:<{v.accepted}>" for k, v in KINDS.items()))
        try:
            value = float(value_text)
        except ValueError:
            value = float("nan")
        if not sep or not np.isfinite(value) or not KINDS[name].valid(value):
            raise ConfigError(f"corruption {item!r}: {name} takes {KINDS[name].accepted}, e.g. "
                              f"{name}:{'2' if name == 'down' else '0.3'}")
        steps.append((name, value))
    if not steps:
        raise ConfigError(f"empty corruption {text!r}; give name:value, e.g. noise:0.5")
    return Corruption(tuple(steps))


# The lecture's "restoration of many corruptions", one of each, at a middle level.
SHOWCASE = ("noise:0.5", "noise-raw:0.5", "saltpepper:0.2", "rect:0.25", "down:2", "down:4", "blur:1.5",
            "rect:0.15+noise:0.2")
# What the blind model is trained on: every kind at a middle level (noise clipped, as images are).
BLIND = tuple(c for c in SHOWCASE if not c.startswith("noise-raw"))
