"""Pure plotting: arrays in, PNG files out (atomically).  No training, no data loading here.

Figures are made with matplotlib's object API (``matplotlib.figure.Figure``), never pyplot: importing aelab
does not switch a notebook's backend, and no figure stays open in pyplot's global registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from aelab.io import atomic_save


def tile(images: np.ndarray, ncols: int = 12, pad: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile images (N, C, H, W), uint8 or float in [0, 1], into one (rows*(H+pad), ...) float image.

    Returns (H', W') for C == 1 and (H', W', 3) for C == 3, with values in [0, 1].
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"tile expects (N, C, H, W) with C in (1, 3), got {x.shape}")
    x = x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else np.clip(x.astype(np.float64), 0, 1)
    n, c, h, w = x.shape
    nrows = -(-n // ncols)
    out = np.full((c, nrows * (h + pad) + pad, ncols * (w + pad) + pad), pad_value)
    for i in range(n):
        r, col = divmod(i, ncols)
        out[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def save_rows(path: str | Path, rows: Sequence[tuple[str, np.ndarray]], ncols: int = 12,
              title: str | None = None, zoom: float = 1.0) -> Path:
    """The lecture's result figure: one titled panel per entry ``(caption, images (N, C, H, W))``.

    E.g. [("X (original samples)", x), ("g∘f(X) (CNN, d = 8)", x_hat_cnn), ("g∘f(X) (PCA, d = 8)", x_hat_pca)].
    """
    path = Path(path)
    tiles = [tile(imgs, ncols) for _, imgs in rows]
    width = 0.55 * ncols * zoom
    heights = [t.shape[0] / t.shape[1] * width for t in tiles]
    fig = Figure(figsize=(width, sum(heights) + 0.45 * len(rows) + (0.4 if title else 0)))
    axes = fig.subplots(len(rows), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (caption, _), t in zip(axes[:, 0], rows, tiles, strict=True):
        ax.imshow(t, cmap="gray_r" if t.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(caption, fontsize=11)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return path


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically as PNG."""
    path = Path(path)
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))
    return path


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 4), **kw):
    """(fig, axes) like pyplot.subplots, but a free-standing ``Figure`` outside pyplot's state."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)
