"""The lecture's convolutional autoencoder, built from a layer spec.

Encoder f: Conv2d + ReLU layers, the last one without ReLU, ending in the latent z of d channels.
Decoder g: the mirror image, ConvTranspose2d + ReLU, the last one without ReLU.  For the default spec
``print(AutoEncoder(d=8))`` is the slide, layer for layer:

    1x28x28 -> 32x24x24 -> 32x20x20 -> 32x9x9 -> 32x4x4 -> 8x1x1   (f)
    8x1x1   -> 32x4x4   -> 32x9x9   -> 32x20x20 -> 32x24x24 -> 1x28x28   (g)

A convolution of kernel w and stride s maps W to floor((W + 2p - w) / s) + 1; its transpose maps
that back to (W_out - 1) s - 2p + w.  The difference (the pixels the strided convolution never saw,
the lecture's "W = w + s q" rule) is always below the stride and is given back by ``output_padding``; a
spec whose kernel exceeds its layer's input is refused, naming the layer and the sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from aelab.errors import ConfigError
from aelab.ops.shapes import round_trip


@dataclass(frozen=True)
class ConvSpec:
    """One encoder layer: Conv2d(in, channels, kernel, stride, padding)."""

    channels: int
    kernel: int
    stride: int = 1
    padding: int = 0

    def __str__(self) -> str:
        return f"{self.channels}:{self.kernel}:{self.stride}" + (f":{self.padding}" if self.padding else "")


# The slide's encoder; the last layer's channels are replaced by the latent size d.
LECTURE_SPEC: tuple[ConvSpec, ...] = (
    ConvSpec(32, 5, 1), ConvSpec(32, 5, 1), ConvSpec(32, 4, 2), ConvSpec(32, 3, 2), ConvSpec(8, 4, 1),
)


def parse_spec(text: str) -> tuple[ConvSpec, ...]:
    """'32:5:1,32:5:1,32:4:2,32:3:2,8:4:1' (channels:kernel:stride[:padding], comma-separated)."""
    layers = []
    for i, item in enumerate(filter(None, (t.strip() for t in text.split(",")))):
        try:
            nums = [int(v) for v in item.split(":")]
        except ValueError:
            nums = []
        if len(nums) not in (3, 4):
            raise ConfigError(f"layer {i} of spec {text!r}: {item!r} is not channels:kernel:stride[:padding] "
                              "(3 or 4 integers, e.g. 32:5:1)")
        if min(nums[:3]) < 1 or (len(nums) > 3 and nums[3] < 0):
            raise ConfigError(f"layer {i} of spec {text!r}: {item!r} has a value out of range; channels, kernel "
                              "and stride must be >= 1, padding >= 0")
        layers.append(ConvSpec(*nums))
    if not layers:
        raise ConfigError(f"empty layer spec {text!r}; give channels:kernel:stride[:padding] per layer")
    return tuple(layers)


def mirror_output_padding(spec: Sequence[ConvSpec], in_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Per encoder layer, the output_padding its transposed twin needs to give back the layer's input size.

    The size rule of ``aelab.ops.shapes.round_trip``: the transposed convolution gives back W - r, where r
    (< stride) is the pixels the strided convolution never read; ``output_padding = r`` restores W.  So any
    size the encoder admits comes back; only a layer whose kernel exceeds its input is refused.
    """
    pads = []
    h, w = in_size
    for i, layer in enumerate(spec):
        try:
            rh, rw = (round_trip(s, layer.kernel, layer.stride, layer.padding) for s in (h, w))
        except ConfigError as e:
            raise ConfigError(f"encoder layer {i} ({layer.kernel}x{layer.kernel}, stride {layer.stride}) gets a "
                              f"{h}x{w} input ({e}): use larger images or fewer/smaller layers") from None
        pads.append((rh.output_padding, rw.output_padding))
        h, w = rh.conv_size, rw.conv_size
    return pads


INITS = ("pytorch", "kaiming")


def kaiming_init_(model: nn.Module) -> nn.Module:
    """He et al.'s initialisation for ReLU networks: every convolution's weights from N(0, 2 / fan), its bias 0.

    A Conv2d's fan is its input channels x kernel area; a ConvTranspose2d's the same product, its weight being
    (in, out, kh, kw) (PyTorch's fan_out of that weight).  PyTorch's default (the lecture's) draws weights with a
    third of that variance, so the ten layers of the lecture's model shrink how much the output depends on the
    input to well under 1e-4 of a pixel at initialisation (tests/test_models.py), and short runs started from
    there stuck at the mean image for several seeds (docs/benchmarks.md, "Short runs").  Returns ``model``."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                mode = "fan_out" if isinstance(m, nn.ConvTranspose2d) else "fan_in"
                nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model


class AutoEncoder(nn.Module):
    """Convolutional autoencoder: encoder f (Conv2d stack) and decoder g, its mirror: ConvTranspose2d layers
    (the lecture's) or another family of ``aelab.models.decoders.DECODERS`` (``decoder="resize-bilinear"``, ...).

    encode(x: (N, C, H, W)) -> z: (N, D) with D = d * h * w (h = w = 1 for the lecture's spec)
    decode(z: (N, D)) -> x_hat: (N, C, H, W)
    """

    def __init__(self, d: int = 8, spec: Sequence[ConvSpec] = LECTURE_SPEC, in_channels: int = 1,
                 image_size: int | tuple[int, int] = 28, decoder: str = "transposed"):
        super().__init__()
        from aelab.models.decoders import DECODERS

        if d < 1:
            raise ConfigError(f"latent size d must be >= 1, got {d}")
        if decoder not in DECODERS:
            raise ConfigError(f"unknown decoder {decoder!r}; choose one of: {', '.join(DECODERS)}")
        spec = list(spec[:-1]) + [ConvSpec(d, spec[-1].kernel, spec[-1].stride, spec[-1].padding)]
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        pads = mirror_output_padding(spec, size)
        self.spec, self.in_channels, self.image_size, self.decoder_name = tuple(spec), in_channels, size, decoder
        sizes = [size]                                   # the input size of each encoder layer
        for layer in spec:
            sizes.append(tuple(round_trip(s, layer.kernel, layer.stride, layer.padding).conv_size
                               for s in sizes[-1]))

        enc: list[nn.Module] = []
        chans = [in_channels] + [layer.channels for layer in spec]
        for i, layer in enumerate(spec):
            enc.append(nn.Conv2d(chans[i], layer.channels, layer.kernel, layer.stride, layer.padding))
            if i < len(spec) - 1:
                enc.append(nn.ReLU(inplace=True))
        dec: list[nn.Module] = []
        for j, i in enumerate(reversed(range(len(spec)))):   # decoder layer j undoes encoder layer i
            dec += DECODERS[decoder](chans[i + 1], chans[i], spec[i], sizes[i], pads[i])
            if j < len(spec) - 1:
                dec.append(nn.ReLU(inplace=True))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)
        with torch.no_grad():
            self.latent_shape = tuple(self.encoder(torch.zeros(1, in_channels, *size)).shape[1:])
            try:
                back = tuple(self.decoder(torch.zeros(1, *self.latent_shape)).shape[1:])
            except RuntimeError as e:
                back = str(e).strip().splitlines()[0]
        if back != (in_channels, *size):
            raise ConfigError(f"the {decoder} decoder cannot give back {in_channels}x{size[0]}x{size[1]} for spec "
                              f"{','.join(map(str, spec))} (it gives {back}); use another --decoder or spec")

    @property
    def latent_dim(self) -> int:
        return math.prod(self.latent_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) in [0, 1] -> z: (N, D)."""
        return self.encoder(x).flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (N, D) -> x_hat: (N, C, H, W)."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ConfigError(f"decode expects z of shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z.view(len(z), *self.latent_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
