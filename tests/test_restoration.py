"""The restoration study's pieces against independent truths: scipy / scikit-image / closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import convolve, gaussian_filter
from skimage.metrics import structural_similarity
from torch.nn import functional as F

from aelab.corruptions import parse
from aelab.pca import PCA
from aelab.restoration import (
    BASELINES,
    applicable,
    gaussian_psf,
    known_for,
    per_plane,
    psnr,
    score,
    specialist_for,
    ssim,
    summarise,
    tune,
)


@pytest.fixture(scope="module")
def digits(mnist_test) -> np.ndarray:
    """200 real test digits, (N, 1, 28, 28) float64 in [0, 1]."""
    return mnist_test.images[:200].astype(np.float64) / 255.0


def test_the_psf_is_scipys_gaussian_filter_kernel(digits):
    psf = gaussian_psf(1.5)
    assert psf.sum() == pytest.approx(1.0) and psf.shape == (13, 13)
    img = digits[0, 0]
    # away from the border (where modes differ) convolving with the psf is scipy's gaussian filter
    assert np.allclose(convolve(img, psf, mode="constant")[6:-6, 6:-6],
                       gaussian_filter(img, 1.5, mode="constant")[6:-6, 6:-6], atol=1e-12)


def test_the_known_mask_is_exactly_the_occluded_pixels(digits):
    x = torch.from_numpy(digits).float()
    rect = parse("rect:0.25")
    y, mask = rect(x, 3), rect.known_mask(x.shape, 3)
    assert (mask.flatten(1).sum(1) == 196).all()                      # 25 % of 784 pixels, every image
    assert (y[mask] == 0).all() and torch.equal(y[~mask], x[~mask])
    sp = parse("saltpepper:0.2")
    y, mask = sp(x, 5), sp.known_mask(x.shape, 5)
    assert torch.equal(y[~mask], x[~mask]) and set(y[mask].unique().tolist()) <= {0.0, 1.0}
    assert float(mask.float().mean()) == pytest.approx(0.2, abs=0.01)
    chain = parse("rect:0.15+noise:0.2")                             # the mask is the rectangle's, not the noise's
    assert torch.equal(chain.known_mask(x.shape, 1), parse("rect:0.15").known_mask(x.shape, 1))
    assert parse("noise:0.5").known_mask(x.shape, 1) is None


def test_bicubic_starts_from_the_exact_low_resolution_image(digits):
    x = torch.from_numpy(digits).float()
    y = parse("down:2")(x, 0).double().numpy()
    known = known_for(parse("down:2"), y.shape, 0, None)
    expected = F.interpolate(F.avg_pool2d(x.double(), 2), scale_factor=2, mode="bicubic", align_corners=False)
    assert np.allclose(BASELINES["bicubic"].apply(y, None, known), expected.numpy(), atol=1e-6)


@pytest.mark.parametrize("level, method", [("noise:0.3", "median"), ("noise:0.3", "tv"), ("noise:0.3", "nl-means"),
                                           ("noise:0.3", "wavelet"), ("saltpepper:0.2", "median"),
                                           ("saltpepper:0.2", "biharmonic"), ("rect:0.15", "biharmonic"),
                                           ("down:2", "bicubic"), ("blur:1.5", "richardson-lucy"),
                                           ("blur:1.5", "wiener")])
def test_each_tuned_baseline_restores_what_it_is_meant_for(digits, level, method):
    """On real digits each classical method, tuned on other digits, beats its corrupted input in PSNR."""
    corruption = parse(level)
    assert method in applicable(corruption)
    x_val, x_test = digits[:100], digits[100:]
    y_val = corruption(torch.from_numpy(x_val).float(), 7).double().numpy()
    y = corruption(torch.from_numpy(x_test).float(), 8).double().numpy()
    value, best = tune(method, y_val, x_val, known_for(corruption, y_val.shape, 7, None))
    # the chosen value is the grid's best on the held-out images
    tried = [psnr(BASELINES[method].apply(y_val, v, known_for(corruption, y_val.shape, 7, None)), x_val)
             for v in BASELINES[method].grid]
    assert best == max(tried)
    restored = BASELINES[method].apply(y, value, known_for(corruption, y.shape, 8, None))
    assert restored.shape == y.shape
    assert psnr(restored, x_test) > psnr(y, x_test) + 0.5


def test_pca_projection_with_d_directions_is_a_d_component_pca(digits, mnist_test):
    x = torch.from_numpy(digits).float()
    big = PCA(64).fit(x)
    small = PCA(16).fit(x)
    assert np.allclose(big.truncate(16).decode(big.truncate(16).encode(x)), small.decode(small.encode(x)), atol=1e-4)
    with pytest.raises(ValueError, match="has 64 components"):
        big.truncate(65)


def test_ssim_uses_the_stated_settings_and_psnr_the_metrics_formula(digits):
    clean = digits[:20]
    noisy = np.clip(clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape), 0, 1)
    explicit = np.mean([structural_similarity(a[0], b[0], data_range=1.0, win_size=7, K1=0.01, K2=0.03,
                                              gaussian_weights=False, use_sample_covariance=True)
                        for a, b in zip(noisy, clean, strict=True)])
    assert ssim(noisy, clean) == pytest.approx(explicit, rel=1e-12)
    assert ssim(clean, clean) == pytest.approx(1.0)
    per_image = ((noisy - clean) ** 2).reshape(20, -1).mean(1)
    assert psnr(noisy, clean) == pytest.approx(np.mean(10 * np.log10(1 / per_image)))
    s = score(noisy, clean, np.zeros(20, dtype=np.int64))
    assert s["mse"] == pytest.approx(per_image.mean()) and "class_kept" not in s


@pytest.mark.parametrize("shape", [(7, 1, 28, 28), (5, 3, 9, 12), (3, 2, 7, 7)])
def test_ssim_is_scikit_images_per_image_mean_in_every_shape(shape):
    rng = np.random.default_rng(sum(shape))
    clean = rng.random(shape)
    restored = clean + 0.3 * rng.standard_normal(shape)  # partly outside [0, 1]: ssim clips it, as score does
    channel_axis = 0 if shape[1] > 1 else None
    explicit = np.mean([structural_similarity(np.clip(a, 0, 1) if channel_axis == 0 else np.clip(a[0], 0, 1),
                                              b if channel_axis == 0 else b[0], data_range=1.0, win_size=7,
                                              channel_axis=channel_axis)
                        for a, b in zip(restored, clean, strict=True)])
    assert ssim(restored, clean) == pytest.approx(explicit, rel=1e-12)
    assert ssim(restored, clean, chunk=2) == pytest.approx(explicit, rel=1e-12)  # chunks of unequal size


def test_ssim_names_a_shape_it_cannot_score():
    with pytest.raises(ValueError, match="at least that many pixels"):
        ssim(np.zeros((2, 1, 6, 28)), np.zeros((2, 1, 6, 28)))
    with pytest.raises(ValueError, match="one shape"):
        ssim(np.zeros((2, 1, 28, 28)), np.zeros((3, 1, 28, 28)))
    with pytest.raises(ValueError, match="N >= 1"):
        ssim(np.zeros((0, 1, 28, 28)), np.zeros((0, 1, 28, 28)))


def test_per_plane_matches_a_plain_loop_also_when_split_over_processes():
    rng = np.random.default_rng(0)
    y = rng.random((1200, 1, 8, 8))                  # >= 1000 planes: split over the cores
    mask = rng.random(y.shape) < 0.5
    out = per_plane(lambda p, m: np.where(m, p.max(), p), y, mask)
    assert np.array_equal(out, np.stack([np.where(m, p.max(), p) for p, m in zip(y, mask, strict=True)]))


def test_the_specialist_is_the_same_corruption_or_the_same_kinds():
    trained = ("noise:0.5", "down:2", "rect:0.15+noise:0.2")
    assert specialist_for("noise:0.5", trained) == "noise:0.5"
    assert specialist_for("noise:0.25", trained) == "noise:0.5"
    assert specialist_for("down:4", trained) == "down:2"
    assert specialist_for("rect:0.3+noise:0.1", trained) == "rect:0.15+noise:0.2"
    assert specialist_for("blur:1", trained) is None and specialist_for("noise-raw:0.5", trained) is None


def test_the_summary_names_the_best_classical_method_per_score_and_who_beats_it():
    rows = [{"dataset": "m", "corruption": "c", "method": "corrupted", "kind": "input", "psnr": 10, "ssim": 0.3},
            {"dataset": "m", "corruption": "c", "method": "a", "kind": "classical", "psnr": 15, "ssim": 0.5},
            {"dataset": "m", "corruption": "c", "method": "b", "kind": "classical", "psnr": 14, "ssim": 0.7},
            {"dataset": "m", "corruption": "c", "method": "specialised AE", "kind": "specialised", "psnr": 16,
             "ssim": 0.6},
            {"dataset": "m", "corruption": "c", "method": "blind AE", "kind": "blind", "psnr": 14.5, "ssim": 0.8}]
    (s,) = summarise(rows)
    assert (s["best_psnr"], s["best_psnr_method"], s["best_ssim"], s["best_ssim_method"]) == (15, "a", 0.7, "b")
    assert (s["specialised_beats_psnr"], s["specialised_beats_ssim"]) == ("yes", "no")
    assert (s["blind_beats_psnr"], s["blind_beats_ssim"]) == ("no", "yes")
    assert s["input_psnr"] == 10 and "best_class_kept" not in s


def test_the_facts_sentence_names_each_level_once_and_leaves_empty_groups_out():
    from aelab.report import restoration_facts

    def level(name, spec, blind):  # one classical method at PSNR 15, SSIM 0.5; the AEs at the given scores
        return [{"dataset": "m", "corruption": name, "method": "corrupted", "kind": "input", "psnr": 9, "ssim": 0.1},
                {"dataset": "m", "corruption": name, "method": "a", "kind": "classical", "psnr": 15, "ssim": 0.5},
                {"dataset": "m", "corruption": name, "method": "s", "kind": "specialised", "psnr": spec[0],
                 "ssim": spec[1]},
                {"dataset": "m", "corruption": name, "method": "b", "kind": "blind", "psnr": blind[0],
                 "ssim": blind[1]}]

    rows = level("x", (16, 0.6), (14, 0.4)) + level("y", (16, 0.4), (14, 0.4)) + level("z", (17, 0.7), (14, 0.6))
    f = restoration_facts(summarise(rows))["m"]
    assert (f["specialised"]["all"], f["specialised"]["some"], f["specialised"]["none"]) == (["x", "z"], ["y"], [])
    assert f["specialised"]["sentence"] == "on every score at x, z; on some scores at y"
    assert f["blind"]["sentence"] == "on some scores at z; on no score at x, y"
    assert f["blind_minus_specialised"] == {"x": -2, "y": -2, "z": -3}


def test_richardson_lucy_in_chunks_is_scikit_images_on_each_plane(digits):
    from skimage.restoration import richardson_lucy

    from aelab.restoration import RL_CHUNK

    level = parse("blur:1.5")
    clean = digits[: RL_CHUNK + 7]  # one full chunk and a short one
    y = level(torch.from_numpy(clean).float(), 0).double().numpy()
    psf = gaussian_psf(1.5)
    want = np.stack([richardson_lucy(p[0].clip(0, 1), psf, num_iter=10, clip=True) for p in y])[:, None]
    got = BASELINES["richardson-lucy"].apply(y, 10, known_for(level, y.shape, 0, None))
    np.testing.assert_array_equal(got, want)
