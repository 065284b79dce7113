"""Reference operators vs torch.nn.functional (float64), vs each other, the adjoint identity, autograd,
and the lecture's printed tensors.

Tolerance: float64 throughout; results agree to rtol = atol = 1e-9 (observed error ~1e-15).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from aelab import ops
from aelab.errors import ConfigError

TOL = {"rtol": 1e-9, "atol": 1e-9}
CASES = settings(max_examples=500, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@st.composite
def conv_case(draw, nd: int, transposed: bool):
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    s = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    d = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    p = tuple(draw(st.integers(0, 3)) for _ in range(nd))
    if transposed:
        size = tuple(draw(st.integers(1, 6 if nd == 2 else 9)) for _ in range(nd))
        op = tuple(draw(st.integers(0, max(si, di) - 1)) for si, di in zip(s, d, strict=True))
        assume(all((L - 1) * si - 2 * pi + di * (ki - 1) + o + 1 >= 1
                   for L, si, pi, di, ki, o in zip(size, s, p, d, k, op, strict=True)))
    else:
        size = tuple(max(1, di * (ki - 1) + 1 - 2 * pi) + draw(st.integers(0, 6 if nd == 2 else 10))
                     for ki, di, pi in zip(k, d, p, strict=True))
        op = None
    n = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, c_in, *size))
    w = rng.normal(size=(c_in, c_out // groups, *k) if transposed else (c_out, c_in // groups, *k))
    b = rng.normal(size=c_out) if draw(st.booleans()) else None
    return x, w, b, s, p, d, groups, op


def _t(a):
    return None if a is None else torch.from_numpy(a)


def _check_conv(nd, case):
    x, w, b, s, p, d, g, _ = case
    ref = getattr(F, f"conv{nd}d")(_t(x), _t(w), _t(b), stride=s, padding=p, dilation=d, groups=g).numpy()
    for method in ("direct", "matrix"):
        np.testing.assert_allclose(getattr(ops, f"conv{nd}d")(x, w, b, s, p, d, g, method=method), ref, **TOL)


def _check_conv_t(nd, case):
    x, w, b, s, p, d, g, op = case
    ref = getattr(F, f"conv_transpose{nd}d")(_t(x), _t(w), _t(b), stride=s, padding=p, output_padding=op,
                                             groups=g, dilation=d).numpy()
    for method in ("scatter", "matrix"):
        got = getattr(ops, f"conv_transpose{nd}d")(x, w, b, s, p, op, g, d, method=method)
        np.testing.assert_allclose(got, ref, **TOL)


@CASES
@given(conv_case(1, False))
def test_conv1d_matches_torch(case):
    _check_conv(1, case)


@CASES
@given(conv_case(2, False))
def test_conv2d_matches_torch(case):
    _check_conv(2, case)


@CASES
@given(conv_case(1, True))
def test_conv_transpose1d_matches_torch(case):
    _check_conv_t(1, case)


@CASES
@given(conv_case(2, True))
def test_conv_transpose2d_matches_torch(case):
    _check_conv_t(2, case)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=st.sampled_from([1, 2]).flatmap(lambda nd: conv_case(nd, False)), seed=st.integers(0, 2**31 - 1))
def test_adjoint_identity_and_autograd(case, seed):
    """<conv(x), y> = <x, conv_transpose(y)>, and conv_transpose(y) = d<conv(x), y>/dx (autograd)."""
    x, w, _, s, p, d, g, _ = case
    nd = x.ndim - 2
    conv = getattr(ops, f"conv{nd}d")(x, w, None, s, p, d, g)
    y = np.random.default_rng(seed).normal(size=conv.shape)
    # the output_padding that makes the transposed output exactly x's size
    op = tuple(ops.round_trip(L, k, si, pi, di).output_padding
               for L, k, si, pi, di in zip(x.shape[2:], w.shape[2:], s, p, d, strict=True))
    back = getattr(ops, f"conv_transpose{nd}d")(y, w, None, s, p, op, g, d)
    assert back.shape == x.shape
    np.testing.assert_allclose(np.vdot(conv, y), np.vdot(x, back), rtol=1e-9, atol=1e-9)

    xt = torch.from_numpy(x).requires_grad_(True)
    out = getattr(F, f"conv{nd}d")(xt, torch.from_numpy(w), stride=s, padding=p, dilation=d, groups=g)
    (grad,) = torch.autograd.grad(out, xt, torch.from_numpy(y))
    np.testing.assert_allclose(back, grad.numpy(), **TOL)


# ------------------------------------------------------------------ the lecture's printed tensors
def test_lecture_conv1d_and_conv_transpose1d():
    x = np.array([[[0.0, 0, 1, 0, 0, 0, 0]]])
    k = np.array([[[1.0, 2, 3]]])
    # The lecture text prints "[3., 2., 1., 0.]": a valid convolution of 7 samples by 3 taps has
    # 7 - 3 + 1 = 5 outputs, and PyTorch (checked below) gives [3, 2, 1, 0, 0]; the slide's transcription
    # dropped the last zero.  We reproduce the printed values and the true length.
    for method in ("direct", "matrix"):
        got = ops.conv1d(x, k, method=method)
        assert got[0, 0, :4].tolist() == [3, 2, 1, 0]
        assert got.tolist() == [[[3, 2, 1, 0, 0]]] == F.conv1d(_t(x), _t(k)).tolist()
    for method in ("scatter", "matrix"):
        assert ops.conv_transpose1d(x, k, method=method).tolist() == [[[0, 0, 1, 2, 3, 0, 0, 0, 0]]]


def test_lecture_interpolate_matrices():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    bilinear = [[1.0000, 1.0000, 1.3333, 1.6667, 2.0000, 2.0000],
                [1.0000, 1.0000, 1.3333, 1.6667, 2.0000, 2.0000],
                [1.6667, 1.6667, 2.0000, 2.3333, 2.6667, 2.6667],
                [2.3333, 2.3333, 2.6667, 3.0000, 3.3333, 3.3333],
                [3.0000, 3.0000, 3.3333, 3.6667, 4.0000, 4.0000],
                [3.0000, 3.0000, 3.3333, 3.6667, 4.0000, 4.0000]]
    nearest = [[1, 1, 1, 2, 2, 2]] * 3 + [[3, 3, 3, 4, 4, 4]] * 3
    np.testing.assert_allclose(F.interpolate(x, scale_factor=3, mode="bilinear")[0, 0], bilinear, atol=5e-5)
    np.testing.assert_array_equal(F.interpolate(x, scale_factor=3, mode="nearest")[0, 0], nearest)


def test_lecture_transposed_matrix_slide():
    """The 5x7 banded matrix of kernel (k1, k2, k3) on 7 samples, and its 7x5 transpose."""
    m = ops.matrix.conv_matrix(np.array([[[1.0, 2.0, 3.0]]]), (7,), (1,), (0,), (1,))
    expected = np.array([[1, 2, 3, 0, 0, 0, 0], [0, 1, 2, 3, 0, 0, 0], [0, 0, 1, 2, 3, 0, 0],
                         [0, 0, 0, 1, 2, 3, 0], [0, 0, 0, 0, 1, 2, 3]])
    np.testing.assert_array_equal(m, expected)
    x = np.arange(5.0)[None, None]
    np.testing.assert_array_equal(ops.conv_transpose1d(x, np.array([[[1.0, 2, 3]]]))[0, 0], expected.T @ x[0, 0])


# ------------------------------------------------------------------ shapes
@settings(max_examples=300, deadline=None, derandomize=True)
@given(L=st.integers(1, 40), k=st.integers(1, 6), s=st.integers(1, 4), p=st.integers(0, 3), d=st.integers(1, 3))
def test_shape_rules_match_torch(L, k, s, p, d):
    assume(L + 2 * p >= d * (k - 1) + 1)
    x = torch.zeros(1, 1, L)
    w = torch.zeros(1, 1, k)
    q = F.conv1d(x, w, stride=s, padding=p, dilation=d).shape[-1]
    assert ops.conv_output_size(L, k, s, p, d) == q
    rt = ops.round_trip(L, k, s, p, d)
    assume(rt.back_size >= 1)
    back = F.conv_transpose1d(torch.zeros(1, 1, q), w, stride=s, padding=p, dilation=d).shape[-1]
    assert rt.back_size == back and rt.restores == (back == L)
    fixed = F.conv_transpose1d(torch.zeros(1, 1, q), w, stride=s, padding=p, dilation=d,
                               output_padding=rt.output_padding).shape[-1]
    assert fixed == L
    if p == 0 and d == 1:  # the lecture's rule: W comes back iff W = w + s q for an integer q
        assert rt.restores == ((L - k) % s == 0)


def test_restoring_sizes_lecture_example():
    # kernel 4, stride 2 (the autoencoder's third layer): W = 4 + 2q
    assert ops.restoring_sizes(4, 2, 4, 12) == [4, 6, 8, 10, 12]
    rt = ops.round_trip(21, 4, 2)
    assert (rt.conv_size, rt.back_size, rt.output_padding) == (9, 20, 1)


def test_bad_arguments_are_refused_with_a_reason():
    with pytest.raises(ConfigError, match="divisible by groups"):
        ops.conv1d(np.zeros((1, 3, 5)), np.zeros((2, 1, 3)), groups=2)
    with pytest.raises(ConfigError, match="expects 2 input channels"):
        ops.conv1d(np.zeros((1, 3, 5)), np.zeros((2, 2, 3)))
    with pytest.raises(ConfigError, match="smaller than the kernel"):
        ops.conv1d(np.zeros((1, 1, 2)), np.zeros((1, 1, 3)))
    with pytest.raises(ConfigError, match="output_padding 2"):
        ops.conv_transpose1d(np.zeros((1, 1, 3)), np.zeros((1, 1, 3)), stride=2, output_padding=2)
    with pytest.raises(ConfigError, match="conv2d expects x with 4 dimensions"):
        ops.conv2d(np.zeros((1, 1, 5)), np.zeros((1, 1, 3, 3)))
    with pytest.raises(ConfigError, match="unknown method"):
        ops.conv1d(np.zeros((1, 1, 5)), np.zeros((1, 1, 3)), method="fft")
