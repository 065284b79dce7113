"""Way (b): no matrix.  A convolution is a series of inner products (slide the kernel, one tap at a
time over all positions); a transposed convolution is a weighted sum of translated kernels (every input
value scatters a copy of the kernel, scaled by itself, at stride s, and the copies add up).

Loops run over kernel taps only; positions, batch and channels are vectorised.
"""

from __future__ import annotations

import itertools

import numpy as np

from aelab.ops.shapes import conv_output_size, conv_transpose_output_size


def conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride, padding, dilation, groups) -> np.ndarray:
    """Sliding inner products: y[n, o, i] = b[o] + sum_{c, j} w[o, c, j] x_pad[n, c, i s + j d]."""
    n, c_in = x.shape[:2]
    c_out, c_in_g = weight.shape[:2]
    kernel, nd = weight.shape[2:], x.ndim - 2
    out_size = tuple(conv_output_size(L, k, s, p, d)
                     for L, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation, strict=True))
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    xg = xp.reshape(n, groups, c_in_g, *xp.shape[2:])          # (N, G, C_in/G, *L_pad)
    wg = weight.reshape(groups, c_out // groups, c_in_g, *kernel)  # (G, C_out/G, C_in/G, *k)
    y = np.zeros((n, groups, c_out // groups, *out_size))
    for tap in itertools.product(*[range(k) for k in kernel]):
        window = tuple(slice(j * d, j * d + s * (m - 1) + 1, s)
                       for j, d, s, m in zip(tap, dilation, stride, out_size, strict=True))
        patch = xg[(slice(None), slice(None), slice(None), *window)]  # (N, G, C_in/G, *L_out)
        y += np.einsum(_EIN[nd], wg[(..., *tap)], patch)
    y = y.reshape(n, c_out, *out_size)
    return y if bias is None else y + bias.reshape(1, -1, *([1] * nd))


def conv_transpose(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, stride, padding, output_padding,
                   dilation, groups) -> np.ndarray:
    """Scatter: every input x[n, c, i] adds x[n, c, i] * w[c, o, j] at output position i s + j d - p."""
    n, c_in = x.shape[:2]
    c_out_g, kernel, nd = weight.shape[1], weight.shape[2:], x.ndim - 2
    in_size = x.shape[2:]
    out_size = tuple(conv_transpose_output_size(L, k, s, p, d, op) for L, k, s, p, d, op in
                     zip(in_size, kernel, stride, padding, dilation, output_padding, strict=True))
    # the uncropped canvas: every translated kernel fits; crop `padding` from the start afterwards
    full = tuple(max((L - 1) * s + d * (k - 1) + 1, p + m)
                 for L, s, d, k, p, m in zip(in_size, stride, dilation, kernel, padding, out_size, strict=True))
    canvas = np.zeros((n, groups, c_out_g, *full))
    xg = x.reshape(n, groups, c_in // groups, *in_size)
    wg = weight.reshape(groups, c_in // groups, c_out_g, *kernel)
    for tap in itertools.product(*[range(k) for k in kernel]):
        target = tuple(slice(j * d, j * d + s * (L - 1) + 1, s)
                       for j, d, s, L in zip(tap, dilation, stride, in_size, strict=True))
        canvas[(slice(None), slice(None), slice(None), *target)] += np.einsum(_EIN_T[nd], wg[(..., *tap)], xg)
    crop = tuple(slice(p, p + m) for p, m in zip(padding, out_size, strict=True))
    y = canvas[(slice(None), slice(None), slice(None), *crop)].reshape(n, c_out_g * groups, *out_size)
    return y if bias is None else y + bias.reshape(1, -1, *([1] * nd))


_SP = "xyz"
_EIN = {nd: f"goc,ngc{_SP[:nd]}->ngo{_SP[:nd]}" for nd in (1, 2, 3)}      # kernel tap . patch
_EIN_T = {nd: f"gco,ngc{_SP[:nd]}->ngo{_SP[:nd]}" for nd in (1, 2, 3)}    # input . kernel tap
