"""The latent study's GMM search by BIC, three ways, in alternating rounds, on the training latents of a trained
autoencoder of a run (its cached stage): the candidates one after another with the BLAS threads the process has
(aelab.latent.GMM until 2026-12-01), one after another with one BLAS thread, and ``aelab.latent.GMM`` as it is
(one BLAS thread, as many candidates at a time as the process has BLAS threads).

    python benchmarks/gmm_threads.py runs/default-zen4 [--d 32] [--rounds 2] [--out docs/gmm-threads.json]

Reported: the seconds of each way in each round, the median ratio to the first way of the times taken in the
same round, and the BIC of every candidate and the components chosen by each way, so that a reader sees they
agree.  The refit on all training latents, which follows the search, is not timed here.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from run import _write
from threadpoolctl import threadpool_limits

from aelab.data import load, to_float
from aelab.experiments import load_trained
from aelab.latent import GMM, blas_threads, encode_all
from aelab.runs import environment


def search(gmm: GMM, sub: np.ndarray, threads: int | None, workers: int) -> dict[int, float]:
    """BIC of every candidate on ``sub``: ``workers`` fits at a time with ``threads`` BLAS threads (None: as is)."""
    with threadpool_limits(threads, user_api="blas"):
        fits = gmm.search(sub, workers)
    return {c: float(fits[c].bic(sub)) for c in sorted(fits)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="a folder written by aelab reproduce, with the ae-dD stage")
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    folder = next((args.run / "stages" / f"ae-d{args.d}").iterdir())
    z = encode_all(load_trained(folder, (1, 28, 28))[0], to_float(load("mnist", "train").images))
    gmm = GMM()
    sub = gmm.split(z)[0]
    threads = blas_threads()
    ways = {f"one candidate at a time, {threads} BLAS thread(s) (the previous GMM)": (None, 1),
            "one candidate at a time, 1 BLAS thread": (1, 1),
            f"{threads} candidates at a time, 1 BLAS thread each (aelab.latent.GMM)": (1, threads)}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    bic: dict[str, dict[int, float]] = {}
    names = list(ways)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            bic[name] = search(gmm, sub, *ways[name])
            seconds[name].append(time.perf_counter() - t0)
            print(f"round {r + 1}: {name}: {seconds[name][-1]:.1f} s", flush=True)
    base = seconds[names[0]]
    result = {"environment": environment(), "run": str(args.run), "d": args.d, "subset": len(sub),
              "candidates": list(gmm.candidates), "blas_threads": threads, "seconds": seconds,
              "speedup": {name: statistics.median(b / t for b, t in zip(base, s, strict=True))
                          for name, s in seconds.items()},
              "bic": bic, "chosen": {name: min(b, key=b.get) for name, b in bic.items()}}
    _write(result, args.out)


if __name__ == "__main__":
    main()
