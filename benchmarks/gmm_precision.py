"""The latent study's GMM with its EM in float64 (``aelab.latent.GMM`` until 2026-12-07) and in float32 (since),
in alternating rounds, on the training latents of a run's trained autoencoders (their cached stages).

    python benchmarks/gmm_precision.py runs/zen4-byd [--dims 8,16,32] [--rounds 2] [--sample-seeds 1,2,3,4]
        [--out docs/gmm-precision.json]

Each fit is ``GMM(em_dtype=...).fit`` as the study runs it beside a training: one BLAS thread, one candidate at a
time (the search, then the refit of the choice on all 60000 latents).  Reported per d and precision: the seconds
of each round and their median, the median ratio float64 / float32 of the times taken in the same round, the
components chosen, the refit's EM iterations, the held-out log-likelihood of every candidate, and the scores the
study reports (mean test log-likelihood in nats, and the sample scores: FID, confident, class entropy, nearest
distance, of 5000 samples, seed 0; with ``--sample-seeds`` the FID of other seeds' samples too), so that a reader
sees whether the two agree.
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
from aelab.evaluator import judge_for
from aelab.experiments import load_trained, sample_reference
from aelab.latent import GMM, decode_all, encode_all
from aelab.quality import sample_scores
from aelab.runs import environment

PRECISIONS = {"float64": np.float64, "float32": np.float32}


def mnist_and_reference():
    """(MNIST's training set, its test set, what samples are scored against: ``experiments.sample_reference``)."""
    train, test = load("mnist", "train"), load("mnist", "test")
    return train, test, sample_reference(judge_for(train, test, progress=False), train)


def autoencoder_latents(run: Path, d: int, train, test):
    """(stage folder, autoencoder, training latents, test latents) of the run's autoencoder of size d: the one
    trained from its own weights (ae-dD) or the warm-started one (ae-dD-warm)."""
    for name in (f"ae-d{d}", f"ae-d{d}-warm"):
        if (run / "stages" / name).is_dir():
            folder = next((run / "stages" / name).iterdir())
            codec = load_trained(folder, (1, 28, 28))[0]
            return folder, codec, encode_all(codec, to_float(train.images)), encode_all(codec, to_float(test.images))
    raise SystemExit(f"{run} has no trained autoencoder of d = {d} (stages/ae-d{d} or ae-d{d}-warm)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="a folder written by aelab reproduce, with its ae-dD stages")
    ap.add_argument("--dims", default="8,16,32")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n-samples", type=int, default=5000)
    ap.add_argument("--sample-seeds", default="", help="e.g. 1,2,3,4: also the sample FID of these seeds (the "
                    "spread of the score itself, for one mixture)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    train, test, ref = mnist_and_reference()
    result = {"environment": environment(), "run": str(args.run), "rounds": args.rounds, "dims": {}}
    for d in (int(v) for v in args.dims.split(",")):
        folder, codec, z, z_test = autoencoder_latents(args.run, d, train, test)
        seconds, fits = {p: [] for p in PRECISIONS}, {}
        for r in range(args.rounds):
            for p in (PRECISIONS if r % 2 == 0 else reversed(PRECISIONS)):  # alternating: neither always first
                with threadpool_limits(1, user_api="blas"):
                    t0 = time.perf_counter()
                    # the refit to scikit-learn's tolerance, as the study ran it when this was measured (it now
                    # stops after GMM.refit_iter iterations: benchmarks/gmm_refit.py)
                    fits[p] = GMM(em_dtype=PRECISIONS[p], refit_iter=300).fit(z)
                    seconds[p].append(time.perf_counter() - t0)
                print(f"d = {d}, EM in {p}, round {r + 1}: {seconds[p][-1]:.1f} s", flush=True)
        rows = {}
        for p, gmm in fits.items():  # every round's fit is the same (seeded): the last one is scored
            x = decode_all(codec, gmm.sample(args.n_samples, seed=0))
            rows[p] = {"seconds": seconds[p], "median_s": statistics.median(seconds[p]),
                       "components": gmm.n_components_, "refit_iterations": int(gmm.model_.n_iter_),
                       "held_out_loglik": gmm.held_out_loglik_, "test_loglik": float(gmm.log_prob(z_test).mean()),
                       **sample_scores(ref, x)}
            seeds = [int(v) for v in args.sample_seeds.split(",") if v]
            if seeds:
                rows[p]["fid_by_seed"] = {seed: sample_scores(ref, decode_all(codec, gmm.sample(args.n_samples, seed)))
                                          ["fid"] for seed in seeds}
        ratio = statistics.median(a / b for a, b in zip(seconds["float64"], seconds["float32"], strict=True))
        result["dims"][d] = {"stage": str(folder), **rows, "speedup_float32": ratio}
        print(f"d = {d}: float32 {ratio:.2f}x float64; {rows}", flush=True)
    _write(result, args.out)


if __name__ == "__main__":
    main()
