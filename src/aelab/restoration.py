"""The restoration study: restoring autoencoders against classical baselines, per corruption and level.

Every method restores the same test images, corrupted once with a fixed seed:

    corrupted                 the input as it is (clipped to [0, 1]): the score to beat
    median, gaussian          scipy.ndimage filters (window size / sigma)
    tv, wavelet, nl-means     scikit-image denoisers (weight / sigma / h)
    biharmonic                scikit-image inpainting, told which pixels were occluded (the networks are not)
    bicubic                   bicubic up-sampling of the low-resolution image (PyTorch's bicubic kernel)
    richardson-lucy, wiener   deconvolution with the known Gaussian PSF (iterations, at most 40: each costs a
                              convolution of the whole test set / balance)
    pca                       projection on the top principal directions of clean training images
                              (the lecture's linear autoencoder; number of directions)
    specialised AE            the lecture's autoencoder trained on this kind of corruption
    blind AE                  one autoencoder trained on a random corruption of every kind

Fair tuning: each baseline's one parameter is chosen from its grid on held-out training images (the last
``n_val``, corrupted with another seed) by PSNR against their clean versions: the baselines see clean targets
just as the networks do in training.

Scores (``score``): PSNR (mean over images, peak 1, as in ``aelab.metrics``), SSIM (scikit-image's
``structural_similarity`` with data_range = 1 and its defaults: 7x7 uniform window, K1 = 0.01, K2 = 0.03,
sample covariance; stated because libraries differ on 28x28 images) and class kept by the fixed classifier.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aelab.corruptions import Corruption, Mixture, parse
from aelab.metrics import Codec, reconstruct, scores_from_sse

VALIDATION_SEED = 7  # the held-out images' corruption (the test set uses train.TEST_CORRUPTION_SEED)
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03  # scikit-image's defaults, which ``ssim`` computes
SSIM_SETTINGS = (f"scikit-image structural_similarity, data_range 1, {SSIM_WINDOW}x{SSIM_WINDOW} uniform window, "
                 f"K1 {SSIM_K1}, K2 {SSIM_K2}")


@dataclass(frozen=True)
class Known:
    """What a classical method may be told: the corruption, the occluded pixels, PCA of clean images."""

    corruption: Corruption
    mask: np.ndarray | None = None  # (N, C, H, W) bool: pixels an occluding step overwrote
    pca: Any = None                 # aelab.pca.PCA fitted on clean training images

    def value(self, kind: str) -> float:
        return next(v for name, v in self.corruption.steps if name == kind)


@dataclass(frozen=True)
class Baseline:
    """A classical method: the corruption kinds it is for, its parameter's name and grid, and
    apply(y: (N, C, H, W) float64, parameter, known) -> restored (N, C, H, W)."""

    kinds: tuple[str, ...]
    param: str
    grid: tuple
    apply: Callable[[np.ndarray, Any, Known], np.ndarray]


def _planes(fn, planes: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    return np.stack([fn(p, *(o[i] for o in others)) for i, p in enumerate(planes)])


def per_plane(fn: Callable[..., np.ndarray], y: np.ndarray, *extra: np.ndarray) -> np.ndarray:
    """fn applied to every (H, W) plane of y: (N, C, H, W) (with the matching planes of ``extra``); large
    stacks are split over the CPU's cores (joblib), since these methods work one image at a time."""
    planes = y.reshape(-1, *y.shape[2:])
    others = [e.reshape(-1, *e.shape[2:]) for e in extra]
    jobs = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
    if jobs == 1 or len(planes) < 1000:
        return _planes(fn, planes, others).reshape(y.shape)
    from joblib import Parallel, delayed

    parts = np.array_split(np.arange(len(planes)), 4 * jobs)
    done = Parallel(n_jobs=jobs)(delayed(_planes)(fn, planes[i], [o[i] for o in others]) for i in parts)
    return np.concatenate(done).reshape(y.shape)


def gaussian_psf(sigma: float) -> np.ndarray:
    """The kernel of scipy's gaussian_filter (truncate 4) as an image: a delta filtered, sums to 1."""
    from scipy.ndimage import gaussian_filter

    r = int(4 * sigma + 0.5)
    delta = np.zeros((2 * r + 1, 2 * r + 1))
    delta[r, r] = 1
    return gaussian_filter(delta, sigma)


def _median(y, size, known):
    from scipy.ndimage import median_filter

    return median_filter(y, size=(1, 1, size, size), mode="nearest")


def _gaussian(y, sigma, known):
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(y, sigma=(0, 0, sigma, sigma), mode="nearest")


def _tv(y, weight, known):
    from skimage.restoration import denoise_tv_chambolle

    return per_plane(lambda p: denoise_tv_chambolle(p, weight=weight), y)


def _wavelet(y, sigma, known):
    from skimage.restoration import denoise_wavelet

    planes = y.reshape(-1, *y.shape[2:])  # channel_axis=0: each plane thresholded on its own
    out = denoise_wavelet(planes, sigma=sigma, mode="soft", method="BayesShrink", channel_axis=0)
    return out.reshape(y.shape)


def _nl_means(y, h, known):
    from skimage.restoration import denoise_nl_means

    return per_plane(lambda p: denoise_nl_means(p, h=h, patch_size=3, patch_distance=5, fast_mode=True), y)


def _biharmonic(y, _, known):
    from skimage.restoration import inpaint_biharmonic

    return per_plane(lambda p, m: inpaint_biharmonic(p, m) if m.any() else p, y, known.mask)


def _bicubic(y, _, known):
    from torch.nn import functional as F

    k = int(known.value("down"))
    low = torch.from_numpy(np.ascontiguousarray(y[:, :, ::k, ::k]))  # each k x k block holds its mean
    return F.interpolate(low, scale_factor=k, mode="bicubic", align_corners=False).numpy()


RL_CHUNK = 50  # planes per richardson_lucy call


def _richardson_lucy(y, n_iter, known):
    """scikit-image's Richardson-Lucy on stacks of ``RL_CHUNK`` planes: a (1, k, k) PSF convolves each plane on its
    own (scipy's FFT convolution leaves out the stack's axis), so a stack gives each plane's result to the bit; 50
    planes a call were 2.2x faster than the whole 10000 at once, whose FFT arrays (256 MB) outgrow the caches."""
    from skimage.restoration import richardson_lucy

    psf = gaussian_psf(known.value("blur"))[None]
    planes = y.reshape(-1, *y.shape[2:]).clip(0, 1)
    out = [richardson_lucy(planes[i:i + RL_CHUNK], psf, num_iter=n_iter, clip=True)
           for i in range(0, len(planes), RL_CHUNK)]
    return np.concatenate(out).reshape(y.shape)


def _wiener(y, balance, known):
    from skimage.restoration import wiener

    psf = gaussian_psf(known.value("blur"))
    return per_plane(lambda p: wiener(p, psf, balance, clip=True), y)


def _pca(y, d, known):
    pca = known.pca.truncate(min(d, known.pca.d))
    x = torch.from_numpy(y.astype(np.float32))
    return pca.decode(pca.encode(x)).double().numpy()


NOISE = ("noise", "noise-raw")
BASELINES: dict[str, Baseline] = {
    "median": Baseline((*NOISE, "saltpepper"), "size", (3, 5), _median),
    "gaussian": Baseline((*NOISE, "saltpepper"), "sigma", (0.5, 0.75, 1.0, 1.5), _gaussian),
    "tv": Baseline((*NOISE, "saltpepper"), "weight", (0.05, 0.1, 0.2, 0.4, 0.8), _tv),
    "wavelet": Baseline(NOISE, "sigma", (0.05, 0.1, 0.2, 0.3, 0.5), _wavelet),
    "nl-means": Baseline(NOISE, "h", (0.05, 0.1, 0.2, 0.3, 0.5), _nl_means),
    "biharmonic": Baseline(("rect", "saltpepper"), "mask", (None,), _biharmonic),
    "bicubic": Baseline(("down",), "factor", (None,), _bicubic),
    "richardson-lucy": Baseline(("blur",), "iterations", (5, 10, 20, 40), _richardson_lucy),
    "wiener": Baseline(("blur",), "balance", (1e-5, 1e-4, 0.001, 0.01, 0.1), _wiener),
    "pca": Baseline(("noise", "noise-raw", "saltpepper", "rect", "down", "blur"), "d",
                    (8, 16, 32, 64, 128, 256, 512), _pca),
}


def applicable(corruption: Corruption) -> list[str]:
    """The baselines meant for any step of the chain (PCA for all)."""
    return [name for name, b in BASELINES.items() if set(b.kinds) & set(corruption.kinds)]


def known_for(corruption: Corruption, shape: tuple[int, ...], seed: int, pca) -> Known:
    mask = corruption.known_mask(shape, seed)
    return Known(corruption, None if mask is None else mask.numpy(), pca)


def _pixel_scores(restored: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """mse / loss / psnr (``metrics.scores_from_sse``) of restored, clipped to [0, 1], against clean."""
    sse = torch.from_numpy(((np.clip(restored, 0, 1) - clean) ** 2).reshape(len(clean), -1).sum(1))
    return scores_from_sse(sse, clean[0].size)


def psnr(restored: np.ndarray, clean: np.ndarray) -> float:
    """Mean PSNR (peak 1) of restored against clean, both (N, C, H, W)."""
    return _pixel_scores(restored, clean)["psnr"]


def tune(name: str, y: np.ndarray, clean: np.ndarray, known: Known) -> tuple[Any, float]:
    """The grid value with the best PSNR on held-out images y: (N, C, H, W) -> (value, its PSNR)."""
    b = BASELINES[name]
    tried = [(v, psnr(b.apply(y, v, known), clean)) for v in b.grid]
    return max(tried, key=lambda t: t[1])


def ssim(restored: np.ndarray, clean: np.ndarray, chunk: int = 250) -> float:
    """Mean SSIM over images (settings in ``SSIM_SETTINGS``); images (N, C, H, W) in [0, 1].

    scikit-image's ``structural_similarity`` as it computes one image (of C channels: their mean), here for
    ``chunk`` images at a time: called once per image it spent 0.1 ms an image in Python, 1.0 s for the 10000 test
    images against 0.27 s here (benchmarks/ssim.py).  Its steps, in its order: the 7x7 local means of x, y, x^2,
    y^2 and xy (``scipy.ndimage.uniform_filter`` over the last two axes only), the sample (co)variances (times
    49 / 48), the SSIM map, and its mean over the pixels whose window lies inside the image (a border of 3 cropped
    right after each filter, so the filter's edge mode never counts).  tests/test_restoration.py holds it to
    scikit-image's own."""
    from scipy.ndimage import uniform_filter

    if restored.shape != clean.shape or restored.ndim != 4 or not len(clean):
        raise ValueError(f"ssim takes two (N, C, H, W) arrays of one shape with N >= 1, got {restored.shape} and "
                         f"{clean.shape}")
    if min(clean.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window needs images of at least that many pixels a "
                         f"side, got {clean.shape[-2]}x{clean.shape[-1]}")
    n_window = SSIM_WINDOW ** 2
    cov_norm = n_window / (n_window - 1)  # the sample covariance, as use_sample_covariance=True
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2  # data range 1
    pad = (SSIM_WINDOW - 1) // 2

    def mean(a):  # the 7x7 means at the pixels kept
        return uniform_filter(a, size=SSIM_WINDOW, axes=(-2, -1))[..., pad:-pad, pad:-pad]

    total = 0.0
    for start in range(0, len(clean), chunk):
        x = np.clip(restored[start:start + chunk], 0, 1).astype(np.float64)
        y = clean[start:start + chunk].astype(np.float64)
        ux, uy = mean(x), mean(y)
        vx = cov_norm * (mean(x * x) - ux * ux)
        vy = cov_norm * (mean(y * y) - uy * uy)
        vxy = cov_norm * (mean(x * y) - ux * uy)
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
        total += s.mean(axis=(1, 2, 3), dtype=np.float64).sum()
    return float(total / len(clean))


def score(restored: np.ndarray, clean: np.ndarray, labels: np.ndarray, judge=None) -> dict[str, float]:
    """mse, psnr, ssim and (with a judge) class_kept of restored images against the clean ones."""
    restored = np.clip(restored, 0, 1)
    out = {k: v for k, v in _pixel_scores(restored, clean).items() if k != "loss"}
    out["ssim"] = ssim(restored, clean)
    if judge is not None:
        out["class_kept"] = judge.class_kept(torch.from_numpy(restored.astype(np.float32)), labels)
    return out


def specialist_for(level: str, corruptions) -> str | None:
    """The specialised model for a level: the same corruption, else the first with the same chain of kinds."""
    if level in corruptions:
        return level
    kinds = parse(level).kinds
    return next((c for c in corruptions if parse(c).kinds == kinds), None)


def restore_level(level: str, x_test: np.ndarray, labels: np.ndarray, x_val: np.ndarray, models: dict[str, Codec],
                  pca, judge=None, seed: int = 0) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Every method on one corruption level.

    x_test: (N, C, H, W) clean test images in [0, 1] with labels (N,); x_val: held-out clean images for tuning;
    models: {"specialised": ..., "blind": ...} (either may be absent).  Returns (rows, restored images by method).
    """
    from aelab.train import TEST_CORRUPTION_SEED

    corruption = parse(level)
    assert not isinstance(corruption, Mixture)
    y = corruption(torch.from_numpy(x_test).float(), TEST_CORRUPTION_SEED + seed).double().numpy()
    yv = corruption(torch.from_numpy(x_val).float(), VALIDATION_SEED + seed).double().numpy()
    known = known_for(corruption, y.shape, TEST_CORRUPTION_SEED + seed, pca)
    known_val = known_for(corruption, yv.shape, VALIDATION_SEED + seed, pca)
    outputs, rows = {"corrupted": np.clip(y, 0, 1)}, []
    rows.append({"method": "corrupted", "kind": "input", "param": "", "seconds": 0.0})
    for name in applicable(corruption):
        value, _ = tune(name, yv, x_val, known_val)
        t0 = time.perf_counter()
        outputs[name] = BASELINES[name].apply(y, value, known)
        rows.append({"method": name, "kind": "classical", "param": "" if value is None else
                     f"{BASELINES[name].param} {value:g}", "seconds": time.perf_counter() - t0})
    for role, model in models.items():
        t0 = time.perf_counter()
        outputs[role] = reconstruct(model, torch.from_numpy(y).float()).double().numpy()
        rows.append({"method": f"{role} AE", "kind": role, "param": "", "seconds": time.perf_counter() - t0})
    for row, restored in zip(rows, outputs.values(), strict=True):
        row.update(corruption=level, **score(restored, x_test, labels, judge))
    return rows, outputs


def summarise(rows: list[dict], metrics=("psnr", "ssim", "class_kept")) -> list[dict]:
    """Per (dataset, corruption): the input's scores, the best classical method per metric, and whether the
    specialised and the blind autoencoder beat it ("yes" / "no" / "" when that model is absent)."""
    out = []
    for key in dict.fromkeys((r["dataset"], r["corruption"]) for r in rows):
        group = [r for r in rows if (r["dataset"], r["corruption"]) == key]
        s: dict[str, Any] = {"dataset": key[0], "corruption": key[1]}
        classical = [r for r in group if r["kind"] == "classical"]
        for m in metrics:
            if m not in group[0]:
                continue
            s[f"input_{m}"] = next(r[m] for r in group if r["kind"] == "input")
            best = max(classical, key=lambda r: r[m])
            s[f"best_{m}"], s[f"best_{m}_method"] = best[m], best["method"]
            for role in ("specialised", "blind"):
                r = next((r for r in group if r["kind"] == role), None)
                s[f"{role}_{m}"] = r[m] if r else None
                s[f"{role}_beats_{m}"] = "" if r is None else ("yes" if r[m] > best[m] else "no")
        out.append(s)
    return out


# --------------------------------------------------------------------------- the study on one dataset
def study(dataset: str, levels, corruptions, train, test, models: dict[str, Codec], judge, out, *, n_val: int,
          n_show: int, progress: bool = False):
    """Every level on one dataset: rows (one per method and level) and the figures of the levels that have a
    specialised model (rows: corrupted, each method, clean, on the first ``n_show`` test images).

    train / test: ``aelab.data.Dataset``; the last ``n_val`` training images tune the baselines, the others fit
    the PCA baseline (up to 512 directions); models: corruption text (or "blind") -> trained restorer."""
    from tqdm.auto import tqdm

    from aelab.data import to_float
    from aelab.experiments import Figure
    from aelab.figures import save_rows
    from aelab.pca import PCA

    if len(train) <= n_val:
        from aelab.errors import ConfigError

        raise ConfigError(f"restore.n_val = {n_val} leaves no {dataset} training images for the PCA baseline "
                          f"({len(train)} in all); lower restore.n_val or raise restore.n_train")
    x_train = to_float(train.images[:-n_val])
    pca = PCA(min(512, x_train[0].numel(), len(x_train))).fit(x_train)
    x_val = to_float(train.images[-n_val:]).double().numpy()
    x_test = to_float(test.images).double().numpy()
    rows, figures = [], []
    for level in tqdm(levels, desc=f"restoration {dataset}", disable=not progress, leave=False):
        chosen = {}
        if (spec := specialist_for(level, corruptions)) is not None:
            chosen["specialised"] = models[spec]
        if "blind" in models:
            chosen["blind"] = models["blind"]
        level_rows, outputs = restore_level(level, x_test, test.labels, x_val, chosen, pca, judge)
        for r in level_rows:
            r["dataset"] = dataset
            if r["kind"] == "specialised":
                r["trained_on"] = spec
        rows += level_rows
        if level in corruptions:
            file = f"figures/restore-{dataset}-{slug(level)}.png"
            k = min(n_show, len(x_test))
            panels = [(_label(r), torch.from_numpy(outputs[m][:k]).float())
                      for r, m in zip(level_rows, outputs, strict=True)]
            save_rows(out / file, panels + [("X (clean)", torch.from_numpy(x_test[:k]).float())])
            best = max((r for r in level_rows if r["kind"] == "classical"), key=lambda r: r["psnr"])
            figures.append(Figure(file, f"{dataset}, {level}: the first {k} test images corrupted, restored by each "
                                        f"method and clean. PSNR: corrupted {level_rows[0]['psnr']:.2f} dB, best "
                                        f"classical ({best['method']}) {best['psnr']:.2f} dB"
                                  + "".join(f", {r['method']} {r['psnr']:.2f} dB" for r in level_rows
                                            if r["kind"] in ("specialised", "blind")) + "."))
    return rows, figures


def _label(row: dict) -> str:
    param = f", {row['param']}" if row["param"] else ""
    return f"{row['method']}{param}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}"


def slug(corruption: str) -> str:
    """'rect:0.15+noise:0.2' -> 'rect0.15-noise0.2' (stage and file names)."""
    return corruption.replace(":", "").replace("+", "-")
