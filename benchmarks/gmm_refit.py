"""How far the latent study's GMM refit (EM on all training latents, started from the chosen candidate's fit on
the search subset: ``aelab.latent.GMM.fit``) must run: its time, EM iterations, mean test log-likelihood and
sample scores for each stopping rule, on the training latents of a run's trained autoencoders.

    python benchmarks/gmm_refit.py runs/zen4-f32 [--dims 8,16,32] [--rules 300:1e-3,300:1e-2,10:1e-3]
        [--sample-seeds 0,1,2] [--out docs/gmm-refit.json]

A rule is max_iter:tol, scikit-learn's GaussianMixture settings (it stops when an iteration raises the mean
log-likelihood lower bound by less than tol, or after max_iter iterations); 300:1e-3 is the study's until
2026-12-07.  The search is run once per d (as the study runs it: one BLAS thread, one candidate at a time) and
every rule refits the same chosen candidate, one BLAS thread.  FIDs are of 5000 samples per sampling seed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from gmm_precision import autoencoder_latents, mnist_and_reference
from run import _write
from threadpoolctl import threadpool_limits

from aelab.latent import GMM, decode_all
from aelab.quality import sample_scores
from aelab.runs import environment


class _Rule(GMM):
    """The study's GMM with the refit's stopping rule set: at most max_iter iterations (``refit_iter``), tol."""

    def __init__(self, max_iter: int, tol: float):
        super().__init__(refit_iter=max_iter)
        self.tol = tol

    def _mixture(self, k, start=None, dtype=np.float64):
        m = super()._mixture(k, start, dtype)
        return m if start is None else m.set_params(tol=self.tol)  # the refit; the search keeps the study's rule


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="a folder written by aelab reproduce, with its ae-dD stages")
    ap.add_argument("--dims", default="8,16,32")
    ap.add_argument("--rules", default="300:1e-3,300:1e-2,20:1e-3,10:1e-3,5:1e-3")
    ap.add_argument("--n-samples", type=int, default=5000)
    ap.add_argument("--sample-seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rules = [(int(a), float(b)) for a, b in (r.split(":") for r in args.rules.split(","))]
    seeds = [int(v) for v in args.sample_seeds.split(",") if v]
    train, test, ref = mnist_and_reference()
    result = {"environment": environment(), "run": str(args.run), "dims": {}}
    for d in (int(v) for v in args.dims.split(",")):
        folder, codec, z, z_test = autoencoder_latents(args.run, d, train, test)
        base = GMM()
        with threadpool_limits(1, user_api="blas"):
            t0 = time.perf_counter()
            sub, held = base.split(z)
            fits = base.search(sub, 1)
            search_s = time.perf_counter() - t0
        loglik = {c: float(f.score(held)) for c, f in fits.items()}
        k = max(loglik, key=loglik.get)
        print(f"d = {d}: search {search_s:.1f} s, {k} components", flush=True)
        rows = []
        for max_iter, tol in rules:
            gmm = _Rule(max_iter, tol)
            with threadpool_limits(1, user_api="blas"):  # a refit stopped short is not warned (GMM._em)
                t0 = time.perf_counter()
                gmm.model_ = gmm._em(k, z, fits[k])
                seconds = time.perf_counter() - t0
            fid = {s: sample_scores(ref, decode_all(codec, gmm.sample(args.n_samples, seed=s)))["fid"] for s in seeds}
            rows.append({"max_iter": max_iter, "tol": tol, "seconds": seconds, "iterations": int(gmm.model_.n_iter_),
                         "converged": bool(gmm.model_.converged_),
                         "train_loglik": float(gmm.model_.score(z)), "test_loglik": float(gmm.log_prob(z_test).mean()),
                         "fid_by_seed": fid, "fid_median": statistics.median(fid.values())})
            print(f"d = {d}, refit {max_iter}:{tol:g}: {rows[-1]}", flush=True)
        result["dims"][d] = {"stage": str(folder), "components": k, "search_seconds": search_s, "refits": rows}
    _write(result, args.out)


if __name__ == "__main__":
    main()
