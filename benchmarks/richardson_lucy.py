"""The restoration study's Richardson-Lucy deconvolution: scikit-image's ``richardson_lucy`` on the whole stack of
test images at once (as the study ran it until 2026-12-08) against ``aelab.restoration``'s, the same call on
stacks of ``RL_CHUNK`` planes.

    python benchmarks/richardson_lucy.py [--rounds 5] [--iterations 20] [--out docs/richardson-lucy.json]

The full MNIST test set (10000 images) blurred as the study's blur:1.5, float64; both ways timed in each round in
an order that rotates (``run.interleaved``): the median seconds of each, the median and quartiles over rounds of
whole / chunked, and the largest difference between the two outputs (0 when the chunks give each plane's result
to the bit).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
from run import _write, interleaved, ratio, ratio_quartiles
from skimage.restoration import richardson_lucy

from aelab.corruptions import parse
from aelab.data import load, to_float
from aelab.restoration import BASELINES, RL_CHUNK, gaussian_psf, known_for
from aelab.runs import environment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    level = parse("blur:1.5")
    clean = to_float(load("mnist", "test").images)
    y = level(clean, 0).double().numpy()
    known = known_for(level, y.shape, 0, None)
    planes, psf = y.reshape(-1, *y.shape[2:]).clip(0, 1), gaussian_psf(1.5)[None]

    def whole():
        return richardson_lucy(planes, psf, num_iter=args.iterations, clip=True).reshape(y.shape)

    def chunked():
        return BASELINES["richardson-lucy"].apply(y, args.iterations, known)

    difference = float(np.abs(whole() - chunked()).max())
    times = interleaved({"whole": whole, "chunked": chunked}, args.rounds)
    q = ratio_quartiles(times["whole"], times["chunked"])
    _write({"environment": environment(), "torch_threads": torch.get_num_threads(), "rounds": args.rounds,
            "images": len(y), "iterations": args.iterations, "chunk": RL_CHUNK, "max_difference": difference,
            "seconds_whole": statistics.median(times["whole"]), "seconds_chunked": statistics.median(times["chunked"]),
            "whole_over_chunked": ratio(times["whole"], times["chunked"]), "quartiles": [q[0], q[2]],
            "times": times}, args.out)


if __name__ == "__main__":
    main()
