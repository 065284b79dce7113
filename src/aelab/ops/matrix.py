"""Way (a): a convolution is a matrix.  Build it explicitly, multiply; the transposed convolution
multiplies by its transpose (the lecture's banded Toeplitz matrix and its transpose).

Every spatial position is flattened (row-major), so the same code covers 1D, 2D and 3D.
"""

from __future__ import annotations

import itertools

import numpy as np

from aelab.ops.shapes import conv_output_size, conv_transpose_output_size


def conv_matrix(weight: np.ndarray, in_size: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...],
                dilation: tuple[int, ...], groups: int = 1) -> np.ndarray:
    """The matrix M of the convolution with ``weight`` (C_out, C_in/groups, *k) on inputs of ``in_size``.

    conv(x) = M @ x.flatten() for one sample; M has shape (C_out * prod(L_out), C_in * prod(L_in)).
    Row o * P_out + i holds, at column c * P_in + (i * s + j * d - p), the tap w[o, c', j]: inner products.
    """
    c_out, c_in_g = weight.shape[:2]
    kernel = weight.shape[2:]
    out_size = tuple(conv_output_size(n, k, s, p, d)
                     for n, k, s, p, d in zip(in_size, kernel, stride, padding, dilation, strict=True))
    p_in, p_out = int(np.prod(in_size)), int(np.prod(out_size))
    m = np.zeros((c_out * p_out, c_in_g * groups * p_in), dtype=np.float64)
    # all output positions at once: (P_out, ndim)
    out_pos = np.stack(np.meshgrid(*[np.arange(n) for n in out_size], indexing="ij"), -1).reshape(-1, len(in_size))
    rows = np.arange(p_out)
    c_out_g = c_out // groups
    for tap in itertools.product(*[range(k) for k in kernel]):
        src = out_pos * np.array(stride) + np.array(tap) * np.array(dilation) - np.array(padding)
        ok = np.all((src >= 0) & (src < np.array(in_size)), axis=1)  # taps on the zero padding add nothing
        cols = np.ravel_multi_index(tuple(src[ok].T), in_size)
        for o in range(c_out):
            g = o // c_out_g
            for ci in range(c_in_g):
                c = g * c_in_g + ci
                m[o * p_out + rows[ok], c * p_in + cols] += weight[(o, ci, *tap)]
    return m


def conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride, padding, dilation, groups) -> np.ndarray:
    """x: (N, C_in, *L) -> (N, C_out, *L_out) as M @ x."""
    in_size = x.shape[2:]
    m = conv_matrix(weight, in_size, stride, padding, dilation, groups)
    out_size = tuple(conv_output_size(n, k, s, p, d)
                     for n, k, s, p, d in zip(in_size, weight.shape[2:], stride, padding, dilation, strict=True))
    y = (x.reshape(len(x), -1) @ m.T).reshape(len(x), weight.shape[0], *out_size)
    return y if bias is None else y + bias.reshape(1, -1, *([1] * len(in_size)))


def conv_transpose(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride, padding, output_padding,
                   dilation, groups) -> np.ndarray:
    """x: (N, C_in, *L) -> (N, C_out, *L_out) as M^T @ x, with weight (C_in, C_out/groups, *k).

    M is the matrix of the convolution of inputs of the transposed output size: the transposed convolution
    is exactly its adjoint.  With dilation, output_padding may reach past the stride (PyTorch allows
    output_padding < max(stride, dilation)); that convolution then has more than L outputs, and only the
    rows of its first L positions (the ones the transposed convolution reads) enter the adjoint.
    """
    in_size = x.shape[2:]
    out_size = tuple(conv_transpose_output_size(n, k, s, p, d, op) for n, k, s, p, d, op in
                     zip(in_size, weight.shape[2:], stride, padding, dilation, output_padding, strict=True))
    m = conv_matrix(weight, out_size, stride, padding, dilation, groups)
    conv_size = tuple(conv_output_size(n, k, s, p, d)
                      for n, k, s, p, d in zip(out_size, weight.shape[2:], stride, padding, dilation, strict=True))
    rows = m.reshape(weight.shape[0], *conv_size, -1)[(slice(None), *[slice(0, n) for n in in_size])]
    y = (x.reshape(len(x), -1) @ rows.reshape(-1, m.shape[1])).reshape(len(x), weight.shape[1] * groups, *out_size)
    return y if bias is None else y + bias.reshape(1, -1, *([1] * len(out_size)))
