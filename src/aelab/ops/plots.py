"""Figures of the operators: the convolution matrix, coverage maps, upsampler responses, and the
frame-by-frame 1D convolution / transposed convolution of the lecture's slides (PNG frames + GIF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.patches import Rectangle
from PIL import Image

from aelab.figures import save_figure, subplots
from aelab.io import atomic_save
from aelab.ops import conv1d, conv_transpose1d
from aelab.ops.artefacts import UPSAMPLERS, constant_response, coverage, coverage_score_2d
from aelab.ops.matrix import conv_matrix


def symbolic_matrix(length: int, kernel: int, stride: int = 1) -> list[list[str]]:
    """The convolution matrix with entries named as on the slide: κ1, κ2, ... and 0."""
    m = conv_matrix(np.arange(1.0, kernel + 1)[None, None], (length,), (stride,), (0,), (1,))
    return [[f"κ{int(v)}" if v else "0" for v in row] for row in m]


def format_matrix(rows: list[list[str]]) -> str:
    width = max(len(c) for r in rows for c in r)
    return "\n".join("  ".join(c.rjust(width) for c in r) for r in rows)


def plot_matrix(length: int, kernel: int, stride: int, path: str | Path) -> Path:
    sym = symbolic_matrix(length, kernel, stride)
    t = [list(r) for r in zip(*sym, strict=True)]
    fig, axes = subplots(1, 2, figsize=(0.5 * (length + len(sym)) + 2, 0.45 * length + 1.2))
    for ax, mat, title in ((axes[0], sym, f"conv matrix ({len(sym)}x{length})"),
                           (axes[1], t, f"its transpose ({length}x{len(sym)})")):
        vals = np.array([[0 if c == "0" else int(c[1:]) for c in r] for r in mat])
        ax.imshow(vals, cmap="Blues", vmin=0, vmax=kernel + 1)
        for (i, j), c in np.ndenumerate(np.array(mat)):
            ax.text(j, i, c, ha="center", va="center", fontsize=9, color="black" if c == "0" else "navy")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"kernel {kernel}, stride {stride}: conv = inner products, transposed = translated kernels")
    return save_figure(fig, path)


def plot_coverage(kernel: int, stride: int, path: str | Path, dilation: int = 1) -> Path:
    """2D coverage map of a square kernel (the lecture's example: 4x4, stride 3) with its counts."""
    cov = coverage((kernel, kernel), (stride, stride), (dilation, dilation), size=(4, 4))
    fig, ax = subplots(figsize=(5.5, 5.5))
    ax.imshow(cov, cmap="magma", vmin=0)
    for (i, j), v in np.ndenumerate(cov):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < cov.max() / 2 else "k")
    ax.set_title(f"taps per output pixel: {kernel}x{kernel} kernel, stride {stride}\n"
                 f"2-D checkerboard score {coverage_score_2d(kernel, stride, dilation):.3f}")
    ax.axis("off")
    return save_figure(fig, path)


def plot_upsamplers(path: str | Path, scale: int = 3, kernel: int = 4, seed: int = 0) -> tuple[Path, dict]:
    """Each upsampler's response to a constant 8x8 input (random weights): artefacts show as patterns."""
    responses = [constant_response(m, scale, kernel, seed=seed) for m in UPSAMPLERS]
    fig, axes = subplots(1, len(responses), figsize=(3.2 * len(responses), 3.6))
    for ax, r in zip(axes, responses, strict=True):
        dev = r.output - r.output.mean()
        spread = max(np.abs(dev).max(), 1e-6 * max(np.abs(r.output).max(), 1.0))
        ax.imshow(dev / spread, cmap="gray", vmin=-1, vmax=1)  # a constant shows as mid-grey
        ax.set_title(f"{r.method}\nscore {r.score:.3f}", fontsize=10)
        ax.axis("off")
    fig.suptitle(f"constant input, upsampling x{scale}, {kernel}x{kernel} kernels, random weights (seed {seed})")
    return save_figure(fig, path), {r.method: r.score for r in responses}


# --------------------------------------------------------------------------- step-by-step frames
def _cells(ax, y: float, values, highlight=(), label: str = "", fmt="{:g}", color="#ffd166") -> None:
    for i, v in enumerate(values):
        face = color if i in highlight else "white"
        ax.add_patch(Rectangle((i, y), 1, 1, facecolor=face, edgecolor="k"))
        if v is not None:
            ax.text(i + 0.5, y + 0.5, fmt.format(v), ha="center", va="center", fontsize=11)
    ax.text(-0.3, y + 0.5, label, ha="right", va="center", fontsize=11)


def conv_frames(x: np.ndarray, w: np.ndarray, stride: int = 1, transposed: bool = False) -> list:
    """One matplotlib figure per step of a 1D (transposed) convolution, as in the lecture's slides.

    conv: step i reads x[i s : i s + k] and writes output i.  transposed: step i adds x[i] * w at output
    positions i s ... i s + k - 1 (a translated, weighted kernel).
    """
    x, w = np.asarray(x, float), np.asarray(w, float)
    k = len(w)
    if transposed:
        final = conv_transpose1d(x[None, None], w[None, None], stride=stride)[0, 0]
    else:
        final = conv1d(x[None, None], w[None, None], stride=stride)[0, 0]
    width = max(len(x), len(final))
    frames, acc = [], np.zeros(len(final))
    for i in range(len(x) if transposed else len(final)):
        fig, ax = subplots(figsize=(0.6 * width + 2.5, 2.6))
        if transposed:
            acc[i * stride: i * stride + k] += x[i] * w
            _cells(ax, 2, x, {i}, "input")
            _cells(ax, 0, [v if j < i * stride + k else None for j, v in enumerate(acc)],
                   set(range(i * stride, i * stride + k)), "output", color="#8ecae6")
            ax.text(width / 2, 3.4, f"step {i + 1}: output[{i * stride}:{i * stride + k}] += x[{i}] · w"
                    f"  (w = {w.tolist()}, stride {stride})", ha="center", fontsize=11)
        else:
            acc[i] = final[i]
            _cells(ax, 2, x, set(range(i * stride, i * stride + k)), "input")
            _cells(ax, 0, [v if j <= i else None for j, v in enumerate(acc)], {i}, "output", color="#8ecae6")
            ax.text(width / 2, 3.4, f"step {i + 1}: output[{i}] = <x[{i * stride}:{i * stride + k}], w>"
                    f"  (w = {w.tolist()}, stride {stride})", ha="center", fontsize=11)
        ax.set_xlim(-2.5, width + 0.2)
        ax.set_ylim(-0.2, 3.9)
        ax.axis("off")
        frames.append(fig)
    return frames


def save_frames(frames: list, out_dir: str | Path, stem: str, ms_per_frame: int = 900) -> tuple[list[Path], Path]:
    """Write frames as stem-001.png ... and an animated stem.gif (Pillow), atomically."""
    out_dir = Path(out_dir)
    pngs = [save_figure(f, out_dir / f"{stem}-{i + 1:03d}.png", dpi=90) for i, f in enumerate(frames)]
    images = [Image.open(p).convert("RGB") for p in pngs]
    size = (max(im.width for im in images), max(im.height for im in images))
    images = [im.resize(size) if im.size != size else im for im in images]
    gif = out_dir / f"{stem}.gif"
    atomic_save(gif, lambda tmp: images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                                                duration=ms_per_frame, loop=0))
    return pngs, gif
