"""Artefacts: coverage against PyTorch and the closed form; upsamplers on a constant input; figures; CLI."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from aelab.cli import main
from aelab.ops.artefacts import (
    UPSAMPLERS,
    checkerboard_score,
    constant_response,
    coverage,
    coverage_score,
    coverage_score_2d,
)
from aelab.ops.plots import conv_frames, save_frames, symbolic_matrix


@settings(max_examples=100, deadline=None, derandomize=True)
@given(k=st.integers(1, 6), s=st.integers(1, 4), d=st.integers(1, 3), n=st.integers(1, 9))
def test_coverage_is_torch_conv_transpose_of_ones(k, s, d, n):
    ref = F.conv_transpose1d(torch.ones(1, 1, n, dtype=torch.float64), torch.ones(1, 1, k, dtype=torch.float64),
                             stride=s, dilation=d)[0, 0].numpy()
    np.testing.assert_array_equal(coverage(k, s, d, size=n), ref)
    assert coverage(k, s, d, size=n).sum() == n * k  # every input lays down k taps


@pytest.mark.parametrize("k,s", [(4, 3), (3, 2), (5, 2), (4, 2), (6, 3), (2, 1), (7, 4)])
def test_coverage_score_closed_form(k, s):
    # taps per pixel alternate between floor(k/s) and ceil(k/s), mean k/s: score = s/k unless s divides k
    assert coverage_score(k, s) == pytest.approx(0.0 if k % s == 0 else s / k)


@pytest.mark.parametrize("k,s", [(4, 3), (3, 2), (5, 2), (4, 2), (6, 3), (7, 3)])
def test_coverage_score_2d_closed_form(k, s):
    import math

    lo, hi, mean = (k // s) ** 2, math.ceil(k / s) ** 2, (k / s) ** 2
    assert coverage_score_2d(k, s) == pytest.approx((hi - lo) / mean)


def test_lecture_2d_example_4x4_stride_3():
    cov = coverage((4, 4), (3, 3), size=(4, 4))
    inner = cov[4:-4, 4:-4]
    assert set(np.unique(inner)) == {1.0, 2.0, 4.0}  # the grid the lecture shows
    np.testing.assert_array_equal(cov, np.outer(coverage(4, 3, size=4), coverage(4, 3, size=4)))


def test_upsamplers_on_a_constant_input():
    scores = {m: constant_response(m, scale=3, kernel=4, seed=s).score for m in UPSAMPLERS for s in (0,)}
    # interpolation then convolution, and ICNR-initialised sub-pixel convolution: exactly flat interior
    assert scores["resize-nearest"] < 1e-6 and scores["resize-bilinear"] < 1e-6
    assert scores["pixel-shuffle-icnr"] < 1e-6
    # random transposed and sub-pixel convolutions: a periodic pattern
    assert scores["transposed"] > 0.1 and scores["pixel-shuffle"] > 0.1
    out = constant_response("transposed", 3, 4, seed=0).output
    inner = out[7:-7, 7:-7]
    np.testing.assert_allclose(inner[:3, :3], inner[3:6, 3:6], rtol=1e-5)  # period = stride


def test_checkerboard_score_definition():
    assert checkerboard_score(np.full((5, 5), 3.0)) == 0
    assert checkerboard_score(np.array([1.0, 2.0, 1.0, 2.0])) == pytest.approx(1 / 1.5)
    assert checkerboard_score(np.array([9.0, 1.0, 2.0, 1.0, 2.0, 9.0]), margin=1) == pytest.approx(1 / 1.5)


def test_symbolic_matrix_is_the_slide():
    assert symbolic_matrix(7, 3)[0] == ["κ1", "κ2", "κ3", "0", "0", "0", "0"]
    assert len(symbolic_matrix(7, 3)) == 5 and len(symbolic_matrix(7, 3, stride=2)) == 3


@pytest.mark.parametrize("transposed,stride,n_frames", [(False, 1, 3), (False, 2, 2), (True, 1, 5), (True, 2, 5)])
def test_frames_and_gif(tmp_path, transposed, stride, n_frames):
    frames = conv_frames([1, 2, 0, -1, 3], [1, 2, -1], stride, transposed)
    assert len(frames) == n_frames  # conv: one per output; transposed: one per input
    pngs, gif = save_frames(frames, tmp_path, "f")
    with Image.open(gif) as im:
        assert im.n_frames == n_frames and len(pngs) == n_frames


def test_ops_cli(tmp_path, capsys):
    assert main(["ops", "--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("shapes", "matrix", "artefacts", "frames"))
    assert main(["ops", "shapes", "-W", "28", "-k", "5", "-s", "1"]) == 0
    assert "comes back exactly" in capsys.readouterr().out
    assert main(["ops", "shapes", "-W", "21", "-k", "4", "-s", "2"]) == 0
    assert "output_padding=1 restores W" in capsys.readouterr().out
    assert main(["ops", "matrix", "--length", "7", "--kernel", "3", "--out", str(tmp_path / "m.png")]) == 0
    assert "κ1  κ2  κ3   0   0   0   0" in capsys.readouterr().out
    assert main(["ops", "artefacts", "--out-dir", str(tmp_path)]) == 0
    assert "checkerboard score: 0.7500" in capsys.readouterr().out
    assert main(["ops", "frames", "--out-dir", str(tmp_path), "--transposed", "--stride", "2"]) == 0
    assert (tmp_path / "conv-transpose1d-s2.gif").exists()
    assert main(["ops", "shapes", "-W", "2", "-k", "5"]) == 2  # kernel larger than the input


def test_stride_power_share_on_constructed_images():
    """Known answers: a pure checkerboard is all stride-2 power; a smooth blob has almost none; white noise has
    the share of frequency bins on the stride rows and columns; a stride-3 grid is seen at stride 3, not 2."""
    from aelab.ops.artefacts import radial_profile, stride_power_share

    i, j = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
    checker = (-1.0) ** (i + j)
    assert stride_power_share(checker[None], 2) == pytest.approx(1.0)
    blob = np.exp(-((i - 13.5) ** 2 + (j - 13.5) ** 2) / (2 * 4.0**2))
    assert stride_power_share(blob[None], 2) < 1e-6
    noise = np.random.default_rng(0).standard_normal((400, 28, 28))
    assert stride_power_share(noise, 2) == pytest.approx((28 + 28 - 1) / (28 * 28 - 1), rel=0.05)
    grid3 = np.cos(2 * np.pi * np.arange(27)[None, :] / 3).repeat(27, 0)  # 27 = 9 periods: no leakage
    assert stride_power_share(grid3[None], 3) == pytest.approx(1.0) and stride_power_share(grid3[None], 2) < 1e-6
    from aelab.ops.artefacts import power_spectrum

    centres, power = radial_profile(power_spectrum(blob[None]))
    assert power[0] > power[-1]  # a smooth image's power falls with frequency
