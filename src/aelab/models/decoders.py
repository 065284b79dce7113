"""Decoder families: how the decoder g climbs back from the latent to the image, one encoder layer at a time.

The lecture: "either use transposed conv or conv+interpolate to upscale"; its deep autoencoder's decoder is
"composed of transposed convolutions or other interpolating layers".  Every family mirrors the encoder: the
layer that undoes encoder layer i maps (C_{i+1}, h_{i+1}, w_{i+1}) back to exactly (C_i, h_i, w_i), so any
spec the encoder admits decodes to the input size.

    transposed          ConvTranspose2d(k, s, p, output_padding)            the lecture's
    resize-nearest      interpolate (nearest) to (h_i, w_i) then a "same" Conv2d(k) (zero padding k - 1 in all)
    resize-bilinear     the same with bilinear interpolation
    pixel-shuffle       Conv2d(3x3) to C_i * s^2 channels, PixelShuffle(s), then crop / edge-pad to h_i
    pixel-shuffle-icnr  the same, its s^2 sub-kernels initialised identical (ICNR, Aitken et al. 2017)

For a stride-1 encoder layer there is nothing to upsample: the resize families still interpolate to the
size their convolution needs, and the pixel-shuffle families use the "full" convolution (padding k - 1 - p,
the same map as a stride-1 transposed convolution; cropped when the encoder padded by more than k - 1).
A registry of builders, not a chain of ifs: ``DECODERS``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class SizeTo(nn.Module):
    """Crop (bottom/right) or replicate-pad a (N, C, H, W) map to exactly ``size`` = (h, w)."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = tuple(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.size
        x = x[:, :, :h, :w]
        ph, pw = h - x.shape[2], w - x.shape[3]
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    def extra_repr(self) -> str:
        return f"size={self.size}"


def icnr_(conv: nn.Conv2d, scale: int) -> None:
    """ICNR: give the scale^2 sub-kernels that PixelShuffle interleaves the same initial values, so the
    layer starts as nearest-neighbour upsampling of one convolution: no checkerboard at initialisation."""
    out_c = conv.out_channels // scale**2
    base = torch.empty(out_c, *conv.weight.shape[1:])
    nn.init.kaiming_uniform_(base, a=5 ** 0.5)  # PyTorch's default Conv2d initialisation
    with torch.no_grad():
        conv.weight.copy_(base.repeat_interleave(scale**2, dim=0))  # channel c * s^2 + j  <-  base[c]
        if conv.bias is not None:
            conv.bias.copy_(conv.bias[:: scale**2].repeat_interleave(scale**2))


# A builder maps (in_channels, out_channels, layer, out_size, output_padding) to the modules of one layer.
Builder = Callable[..., list[nn.Module]]


def transposed(c_in: int, c_out: int, layer, size: tuple[int, int], pad: tuple[int, int]) -> list[nn.Module]:
    return [nn.ConvTranspose2d(c_in, c_out, layer.kernel, layer.stride, layer.padding, output_padding=pad)]


def _resize(mode: str) -> Builder:
    def build(c_in: int, c_out: int, layer, size: tuple[int, int], pad: tuple[int, int]) -> list[nn.Module]:
        # Interpolate to the target size, then a "same" convolution (zero padding k - 1 in all, the extra pixel
        # at the bottom/right for even k).  The zero border matters: from a 1x1 latent the interpolated map is
        # constant, and an unpadded convolution of a constant map is constant, so the decoder could only ever
        # output a flat image; the padding gives each output position its own view of the border.
        k = layer.kernel
        up = nn.Upsample(size=tuple(size), mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
        return [up, nn.ZeroPad2d(((k - 1) // 2, k // 2, (k - 1) // 2, k // 2)), nn.Conv2d(c_in, c_out, k, 1, 0)]

    return build


def _pixel_shuffle(icnr: bool) -> Builder:
    def build(c_in: int, c_out: int, layer, size: tuple[int, int], pad: tuple[int, int]) -> list[nn.Module]:
        s = layer.stride
        if s == 1:  # nothing to interleave: the full convolution grows the map back by k - 1 - 2p
            full = nn.Conv2d(c_in, c_out, layer.kernel, 1, max(0, layer.kernel - 1 - layer.padding))
            return [full] if layer.padding <= layer.kernel - 1 else [full, SizeTo(size)]
        conv = nn.Conv2d(c_in, c_out * s * s, 3, 1, 1)
        if icnr:
            icnr_(conv, s)
        return [conv, nn.PixelShuffle(s), SizeTo(size)]

    return build


DECODERS: dict[str, Builder] = {
    "transposed": transposed,
    "resize-nearest": _resize("nearest"),
    "resize-bilinear": _resize("bilinear"),
    "pixel-shuffle": _pixel_shuffle(icnr=False),
    "pixel-shuffle-icnr": _pixel_shuffle(icnr=True),
}

# The code version of each family's builder: a cached model trained with an older builder is not reused
# (2: the resize families pad their convolution).
VERSIONS: dict[str, int] = {"transposed": 1, "resize-nearest": 2, "resize-bilinear": 2, "pixel-shuffle": 1,
                            "pixel-shuffle-icnr": 1}
