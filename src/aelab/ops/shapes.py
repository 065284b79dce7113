"""Shape arithmetic of convolutions and transposed convolutions (PyTorch's conventions).

conv:            L_out = floor((L + 2p - d(k - 1) - 1) / s) + 1
transposed conv: L_out = (L - 1) s - 2p + d(k - 1) + output_padding + 1

The lecture's back-to-back rule: a convolution of kernel w and stride s followed by the transposed
convolution of the same parameters gives back W only if W = w + s q for some integer q (with padding p
and dilation d: only if (W + 2p - d(w - 1) - 1) is a multiple of s).  Otherwise the strided convolution
never sees the last r = (W + 2p - d(w - 1) - 1) mod s pixels, the round trip gives W - r, and
``output_padding = r`` restores W.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aelab.errors import ConfigError


def ntuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """Broadcast an int (or check a sequence) to n spatial dimensions."""
    out = (int(value),) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(out) != n:
        raise ConfigError(f"{name} needs {n} value(s), got {len(out)}: {value!r}")
    return out


def _check(kernel: int, stride: int, padding: int, dilation: int) -> None:
    if kernel < 1 or stride < 1 or dilation < 1 or padding < 0:
        raise ConfigError(f"need kernel >= 1, stride >= 1, dilation >= 1, padding >= 0; got kernel {kernel}, "
                          f"stride {stride}, padding {padding}, dilation {dilation}")


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    _check(kernel, stride, padding, dilation)
    span = dilation * (kernel - 1) + 1
    if size + 2 * padding < span:
        raise ConfigError(f"input size {size} (+ 2x{padding} padding) is smaller than the kernel's span {span}")
    return (size + 2 * padding - span) // stride + 1


def conv_transpose_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                               output_padding: int = 0) -> int:
    _check(kernel, stride, padding, dilation)
    if not 0 <= output_padding < max(stride, dilation):
        raise ConfigError(f"output_padding {output_padding} must be >= 0 and smaller than stride ({stride}) "
                          f"or dilation ({dilation})")
    out = (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    if out < 1:
        raise ConfigError(f"padding {padding} crops away the whole output (size would be {out})")
    return out


@dataclass(frozen=True)
class RoundTrip:
    """What a conv followed by the transposed conv of the same parameters does to a size W."""

    size: int             # W
    conv_size: int        # after the convolution
    back_size: int        # after the transposed convolution with output_padding 0 (< 1: padding crops it all)
    restores: bool        # back_size == W, i.e. W = w + s q (the lecture's rule)
    output_padding: int   # the output_padding that gives back W
    unseen: int           # pixels at the end that the strided convolution never reads


def round_trip(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> RoundTrip:
    q = conv_output_size(size, kernel, stride, padding, dilation)
    back = (q - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1
    r = size - back  # = (size + 2p - d(k - 1) - 1) mod s, always < stride
    return RoundTrip(size, q, back, r == 0, r, r)


def restoring_sizes(kernel: int, stride: int, lo: int, hi: int, padding: int = 0, dilation: int = 1) -> list[int]:
    """All W in [lo, hi] that a conv + transposed conv of these parameters gives back exactly (W = w + s q)."""
    span = dilation * (kernel - 1) + 1
    return [w for w in range(lo, hi + 1)
            if w + 2 * padding >= span and round_trip(w, kernel, stride, padding, dilation).restores]
