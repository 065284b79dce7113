"""The latent study's parts with the codes encoded in fp32 and in bf16, on the models of a finished study.

    python benchmarks/latent_codes.py --run runs/zen4-fp32isl [--dims 8,16,32] [--threads 1] \\
        --out docs/latent-codes-zen4.json

For each d, ``experiments.latent_at`` runs twice on the study's AE and VAEs of that d (the stages the default
plan names: ``ae-d8-warm``, ...): once told its AE was trained in fp32 (codes in fp32, as before), once in bf16
(``latent.codes_precision`` measures and chooses).  Reported per d: the seconds of each, the choice with its
measured speed-up, and each row's FID, confident share and test log-likelihood side by side.  A GMM's EM follows
its start: codes that differ in their last bits can end in another local optimum, so its rows move by more
than the rounding.  Run nothing beside it; ``--threads 1`` as a latent part runs under ``--jobs 2``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
from run import _write
from warm_start import stage_dir

from aelab.config import LatentConfig, resolve
from aelab.evaluator import judge_for
from aelab.experiments import latent_at, load_splits, load_trained, sample_reference
from aelab.pca import PCA
from aelab.pipeline import latent_vaes, study_stage
from aelab.recipe import keep_freed_memory
from aelab.runs import environment


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a finished study (aelab reproduce --out RUN)")
    ap.add_argument("--dims", default="8,16,32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    cfg, lat = resolve("default"), LatentConfig()
    result = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "environment": environment(),
              "threads": args.threads, "run": str(args.run), "dims": {}}
    for d in map(int, args.dims.split(",")):
        ae, _, data_cfg = load_trained(stage_dir(args.run, study_stage(cfg, dataclasses.replace(
            cfg.model, kind="ae", d=d, beta=1.0))))
        vaes = {beta: load_trained(stage_dir(args.run, name))[0] for beta, name in latent_vaes(cfg, d).items()}
        train, test = load_splits(data_cfg)
        ref = sample_reference(judge_for(train, test, progress=False), train)
        pca = PCA.load(next((args.run / "stages" / "pca").glob(f"*/pca-d{d}.safetensors")))
        ways = {}
        for trained in ("fp32", "bf16"):
            with tempfile.TemporaryDirectory() as out:  # its figures are not kept
                t0 = time.perf_counter()
                rows, _ = latent_at(lat, d, ae, vaes, pca, train, test, ref, Path(out), progress=False,
                                    trained=trained)
                ways[trained] = {"seconds": time.perf_counter() - t0, "rows": rows}
        result["dims"][d] = ways
        print(d, {t: round(w["seconds"], 1) for t, w in ways.items()}, flush=True)
        for a, b in zip(ways["fp32"]["rows"], ways["bf16"]["rows"], strict=True):
            print(f"  {a['model']:>10} {a['density']:>6}  FID {a['fid']:8.3f} {b['fid']:8.3f}  codes {b.get('codes')} "
                  f"{b.get('codes_speedup') or ''}", flush=True)
        _write(result, args.out, quiet=True)


if __name__ == "__main__":
    main()
