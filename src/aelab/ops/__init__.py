"""Reference convolutions and transposed convolutions in NumPy float64, each written two ways.

    conv1d / conv2d(x, w, bias, stride, padding, dilation, groups, method="direct" | "matrix")
    conv_transpose1d / conv_transpose2d(..., output_padding, method="scatter" | "matrix")

Arguments follow ``torch.nn.functional``: x (N, C_in, *L); conv weight (C_out, C_in/groups, *k);
transposed-conv weight (C_in, C_out/groups, *k).  "matrix" builds the explicit convolution matrix (and
its transpose); "direct" slides inner products; "scatter" adds translated, weighted kernels.  The tests
check all of them against PyTorch, against each other, and against the adjoint identity.
"""

from __future__ import annotations

import numpy as np

from aelab.errors import ConfigError
from aelab.ops import direct, matrix
from aelab.ops.shapes import (
    RoundTrip,
    conv_output_size,
    conv_transpose_output_size,
    ntuple,
    restoring_sizes,
    round_trip,
)

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "conv_nd", "conv_transpose_nd",
           "conv_output_size", "conv_transpose_output_size", "round_trip", "restoring_sizes", "RoundTrip"]

CONV_METHODS = {"direct": direct.conv, "matrix": matrix.conv}
CONV_T_METHODS = {"scatter": direct.conv_transpose, "matrix": matrix.conv_transpose}


def _prepare(x, weight, bias, nd: int, groups: int, transposed: bool):
    x, weight = np.asarray(x, np.float64), np.asarray(weight, np.float64)
    what = "conv_transpose" if transposed else "conv"
    if x.ndim != nd + 2:
        raise ConfigError(f"{what}{nd}d expects x of shape (N, C, {', '.join('L' * nd)}), got {x.shape}")
    if weight.ndim != nd + 2:
        raise ConfigError(f"{what}{nd}d expects a weight with {nd + 2} dimensions, got {weight.shape}")
    if groups < 1 or x.shape[1] % groups:
        raise ConfigError(f"input channels {x.shape[1]} are not divisible by groups {groups}")
    if transposed:
        if weight.shape[0] != x.shape[1]:
            raise ConfigError(f"transposed-conv weight (C_in, C_out/groups, *k) has C_in {weight.shape[0]} but x "
                              f"has {x.shape[1]} channels")
        c_out = weight.shape[1] * groups
    else:
        if weight.shape[1] * groups != x.shape[1]:
            raise ConfigError(f"conv weight (C_out, C_in/groups, *k) expects {weight.shape[1] * groups} input "
                              f"channels, x has {x.shape[1]}")
        if weight.shape[0] % groups:
            raise ConfigError(f"output channels {weight.shape[0]} are not divisible by groups {groups}")
        c_out = weight.shape[0]
    if bias is not None:
        bias = np.asarray(bias, np.float64)
        if bias.shape != (c_out,):
            raise ConfigError(f"bias must have shape ({c_out},), got {bias.shape}")
    return x, weight, bias


def conv_nd(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, method="direct"):
    """Convolution over the trailing spatial dimensions of x: (N, C_in, *L)."""
    nd = np.ndim(x) - 2
    x, weight, bias = _prepare(x, weight, bias, nd, groups, transposed=False)
    if method not in CONV_METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of: {', '.join(CONV_METHODS)}")
    return CONV_METHODS[method](x, weight, bias, ntuple(stride, nd, "stride"), ntuple(padding, nd, "padding"),
                                ntuple(dilation, nd, "dilation"), groups)


def conv_transpose_nd(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                      method="scatter"):
    """Transposed convolution over the trailing spatial dimensions (PyTorch's argument order)."""
    nd = np.ndim(x) - 2
    x, weight, bias = _prepare(x, weight, bias, nd, groups, transposed=True)
    if method not in CONV_T_METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of: {', '.join(CONV_T_METHODS)}")
    return CONV_T_METHODS[method](x, weight, bias, ntuple(stride, nd, "stride"), ntuple(padding, nd, "padding"),
                                  ntuple(output_padding, nd, "output_padding"), ntuple(dilation, nd, "dilation"),
                                  groups)


def _fixed(nd: int, fn):
    def op(x, *args, **kwargs):
        if np.ndim(x) != nd + 2:
            raise ConfigError(f"{fn.__name__[:-3]}{nd}d expects x with {nd + 2} dimensions (N, C, "
                              f"{', '.join('L' * nd)}), got shape {np.shape(x)}")
        return fn(x, *args, **kwargs)
    op.__name__ = f"{fn.__name__[:-3]}{nd}d"
    op.__doc__ = fn.__doc__
    return op


conv1d, conv2d = _fixed(1, conv_nd), _fixed(2, conv_nd)
conv_transpose1d, conv_transpose2d = _fixed(1, conv_transpose_nd), _fixed(2, conv_transpose_nd)
