"""How the latent study's GMM should choose its number of components: by BIC, or by held-out likelihood?

For each latent size d of a run's autoencoders (its cached ae-dD stages), every candidate of ``aelab.latent.GMM``
is fitted on the search subset of the training latents, as the GMM's search does; each candidate's BIC on that
subset and its mean log-likelihood on held-out training latents (``GMM.held_out`` of them, disjoint from the
subset) are recorded; then each candidate is refitted on all training latents from its subset fit (as the GMM
refits its choice) and sampled and scored as the latent study scores its rows (5000 samples, FID against the
training digits' classifier features, seed 0), with its mean test log-likelihood.  The sample FID of every
candidate is the independent truth a rule of choice is judged by.  Every fit runs on one BLAS thread, one at a
time, and its seconds and EM iterations are recorded.  ``--candidates`` fits other numbers of components than the
study's, ``--subset`` fits them on another number of latents; ``--refit-caps 0,5,10`` also refits the held-out
choice for at most that many EM iterations (0: the subset fit itself, not refitted) and scores each beside the
converged refit.

    python benchmarks/gmm_choice.py runs/zen4-beta2 [--dims 8,16,32] [--candidates 1,5,10,20,40,80]
        [--subset 20000] [--refit-caps 0,5,10,20] [--out docs/gmm-choice-zen4.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from gmm_precision import autoencoder_latents, mnist_and_reference
from run import _write
from threadpoolctl import threadpool_limits

from aelab.latent import GMM, decode_all
from aelab.quality import sample_scores
from aelab.runs import environment


def candidates_at(z: np.ndarray, z_test: np.ndarray, ref, codec, n_samples: int, candidates: tuple[int, ...],
                  refit_caps: tuple[int, ...], subset: int) -> dict:
    # each refit to scikit-learn's tolerance, as GMM.fit refitted its choice when this was measured (it now stops
    # after GMM.refit_iter iterations; --refit-caps scores such caps)
    gmm = GMM(candidates=candidates, subset=subset, refit_iter=300)
    sub, held = gmm.split(z)
    out, capped = {}, {}

    def scored(mixture, seconds: float, iterations: int) -> dict:
        full = GMM(n_components=mixture.n_components)
        full.model_ = mixture
        x = decode_all(codec, full.sample(n_samples, seed=0))
        return {"test_loglik": float(full.log_prob(z_test).mean()), **sample_scores(ref, x), "refit_s": seconds,
                "refit_iterations": iterations}

    with threadpool_limits(1, user_api="blas"):
        fits, search_s = {}, {}
        for c in sorted((c for c in candidates if c < len(sub)), reverse=True):  # one at a time: each timed alone
            t0 = time.perf_counter()
            fits[c] = gmm._mixture(c).fit(sub)
            search_s[c] = time.perf_counter() - t0
        for c in sorted(fits):
            t0 = time.perf_counter()
            refit = gmm._mixture(c, fits[c]).fit(z)   # the refit GMM.fit made of its choice
            out[c] = {"bic": float(fits[c].bic(sub)), "held_out_loglik": float(fits[c].score(held)),
                      "search_s": search_s[c], "search_iterations": int(fits[c].n_iter_),
                      **scored(refit, time.perf_counter() - t0, int(refit.n_iter_))}
            print(f"  {c:3d} components: {out[c]}", flush=True)
        chosen = max(out, key=lambda c: out[c]["held_out_loglik"])
        for cap in refit_caps:  # the choice's refit stopped after `cap` EM iterations (0: the subset fit itself)
            t0 = time.perf_counter()
            mixture = fits[chosen] if cap == 0 else gmm._mixture(chosen, fits[chosen]).set_params(max_iter=cap).fit(z)
            capped[cap] = scored(mixture, time.perf_counter() - t0, 0 if cap == 0 else int(mixture.n_iter_))
            print(f"  {chosen} components, refit of at most {cap} iterations: {capped[cap]}", flush=True)
    return {"subset": len(sub), "held_out": len(held), "candidates": out,
            "by_bic": min(out, key=lambda c: out[c]["bic"]), "by_held_out": chosen,
            "best_fid": min(out, key=lambda c: out[c]["fid"]), "refit_capped": capped}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="a folder written by aelab reproduce, with its ae-dD stages")
    ap.add_argument("--dims", default="8,16,32")
    ap.add_argument("--n-samples", type=int, default=5000)
    ap.add_argument("--candidates", default=",".join(map(str, GMM().candidates)),
                    help="numbers of components to fit (default: the study's)")
    ap.add_argument("--subset", type=int, default=GMM().subset, help="latents each candidate is fitted on "
                    "(default: the study's; 50000 or more: every training latent outside the held-out ones)")
    ap.add_argument("--refit-caps", default="", help="e.g. 0,5,10,20: the held-out choice refitted for at most "
                    "that many EM iterations (0: not refitted), scored beside its converged refit")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    train, test, ref = mnist_and_reference()
    result = {"environment": environment(), "run": str(args.run), "dims": {}}
    for d in (int(v) for v in args.dims.split(",")):
        folder, codec, z, z_test = autoencoder_latents(args.run, d, train, test)  # a warm-started one too
        print(f"d = {d} ({folder})", flush=True)
        result["dims"][d] = {"stage": str(folder), **candidates_at(
            z, z_test, ref, codec, args.n_samples, tuple(int(c) for c in args.candidates.split(",")),
            tuple(int(c) for c in args.refit_caps.split(",") if c), args.subset)}
    _write(result, args.out)


if __name__ == "__main__":
    main()
