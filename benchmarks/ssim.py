"""The restoration study's SSIM: scikit-image's ``structural_similarity`` called once per image (as the study
scored until 2026-12-08) against ``aelab.restoration.ssim``, the same arithmetic for a chunk of images at a time.

    python benchmarks/ssim.py [--rounds 7] [--out docs/ssim.json]

The full MNIST test set (10000 images) against itself with Gaussian noise of sigma 0.25 (the study's noise:0.25,
clipped to [0, 1] as the study scores), float64 as the study holds them; both ways timed in each round in an
order that rotates (``run.interleaved``): the median seconds of each, the median and quartiles over rounds of
loop / chunked, and the two means' difference.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
from run import _write, interleaved, ratio, ratio_quartiles
from skimage.metrics import structural_similarity

from aelab.data import load, to_float
from aelab.restoration import ssim
from aelab.runs import environment


def per_image(restored: np.ndarray, clean: np.ndarray) -> float:
    """The study's SSIM before: one scikit-image call per (1, H, W) image, then the mean."""
    return float(np.mean([structural_similarity(r[0], c[0], data_range=1.0)
                          for r, c in zip(np.clip(restored, 0, 1), clean, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    clean = to_float(load("mnist", "test").images).double().numpy()
    noisy = np.clip(clean + 0.25 * np.random.default_rng(0).standard_normal(clean.shape), 0, 1)
    values = {"loop": per_image(noisy, clean), "chunked": ssim(noisy, clean)}
    times = interleaved({"loop": lambda: per_image(noisy, clean), "chunked": lambda: ssim(noisy, clean)},
                        args.rounds)
    q = ratio_quartiles(times["loop"], times["chunked"])
    _write({"environment": environment(), "torch_threads": torch.get_num_threads(), "rounds": args.rounds,
            "images": len(clean), "ssim": values, "difference": values["chunked"] - values["loop"],
            "seconds_loop": statistics.median(times["loop"]), "seconds_chunked": statistics.median(times["chunked"]),
            "loop_over_chunked": ratio(times["loop"], times["chunked"]), "quartiles": [q[0], q[2]],
            "times": times}, args.out)


if __name__ == "__main__":
    main()
