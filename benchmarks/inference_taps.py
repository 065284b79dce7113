"""Evaluation with the decoder's last layer by taps (``aelab.kernels.for_inference``, what aelab's evaluation
functions do since 2026-12-07) against PyTorch's kernels for every layer, in the same process and rounds.

    python benchmarks/inference_taps.py [--rounds 7] [--n 5000] [--threads 1,2] [--out docs/inference-taps.json]

On n MNIST test images (cached MNIST) the lecture's autoencoder (d = 8, fresh weights: the speed does not depend
on them) reconstructs them (``metrics.reconstruct``) and decodes n latents (``latent.decode_all``), at aelab's
default batch, in rounds whose order rotates (``run.interleaved``); "torch" is the same call with the taps
refused (``kernels.MIN_SPEEDUP`` infinite).  Reported per thread count: the taps' measured no-grad speed-up of the
layer, the median seconds of each, and the median over rounds of the ratio torch / taps of times taken in the
same round; and the largest difference of the two outputs (rounding).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from run import _write, interleaved, measure_afresh, ratio

from aelab import kernels, timings
from aelab.data import load, to_float
from aelab.latent import decode_all, encode_all
from aelab.metrics import reconstruct
from aelab.models import AutoEncoder
from aelab.runs import environment


def refused(fn):
    """fn with no layer by taps."""
    def call():
        keep, kernels.MIN_SPEEDUP = kernels.MIN_SPEEDUP, float("inf")
        try:
            return fn()
        finally:
            kernels.MIN_SPEEDUP = keep
    return call


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    measure_afresh()
    torch.manual_seed(0)
    ae = AutoEncoder(8).eval()
    x = to_float(load("mnist", "test").images[: args.n])
    result = {"environment": environment(), "n": args.n, "rounds": args.rounds, "threads": {}}
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        z = encode_all(ae, x)
        calls = {"reconstruct": lambda: reconstruct(ae, x), "decode_all": lambda z=z: decode_all(ae, z)}
        out = {}
        for name, fn in calls.items():
            times = interleaved({"taps": fn, "torch": refused(fn)}, args.rounds)
            diff = float((fn() - refused(fn)()).abs().max())
            out[name] = {"seconds": {k: statistics.median(v) for k, v in times.items()},
                         "speedup": ratio(times["torch"], times["taps"]), "max_abs_difference": diff}
        out["layer_speedups"] = {k: v for k, v in timings.seen("taps inference").items()
                                 if k.endswith(f" | {threads}")}
        result["threads"][threads] = out
        print(threads, out, flush=True)
    _write(result, args.out)


if __name__ == "__main__":
    main()
