"""Independent trainings side by side: `aelab reproduce --jobs 2` against `--jobs 1` on the same stages.

    python benchmarks/jobs.py [--rounds 3] [--n-train 12000] [--out docs/jobs.json]

Each round trains the same two models (the default recipe's d = 2 and d = 4 autoencoders, one epoch on the first
--n-train MNIST digits) through ``aelab.pipeline.reproduce`` into a fresh folder, once with one stage at a time
(every torch thread on one training) and once with two at a time (each training in its own process with half the
threads), the order alternating from round to round; the ratio is the median over rounds of the per-round ratio
of wall times (``run.interleaved``, ``run.ratio``), so the CPU's drift cancels.  Both walls include everything
``reproduce`` does (the worker processes' start, their planning and data loading).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from run import interleaved, ratio

from aelab.config import resolve
from aelab.pipeline import reproduce
from aelab.runs import environment

TARGETS = ("ae-d2", "ae-d4")


def timed_reproduce(cfg, jobs: int, tmp: Path, log: list[dict]):
    """A callable that runs the TARGETS stages with ``jobs`` into a new folder under tmp and logs their seconds."""
    def run() -> None:
        out = Path(tempfile.mkdtemp(dir=tmp, prefix=f"jobs{jobs}-"))
        t0 = time.perf_counter()
        results = reproduce(cfg, out, progress=False, echo=lambda _text: None, targets=TARGETS, jobs=jobs)
        log.append({"jobs": jobs, "wall_seconds": time.perf_counter() - t0,
                    "stage_seconds": {r.name: r.seconds for r in results if r.status == "computed"}})
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=12000)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = resolve("default", sets=[f"data.n_train={args.n_train}", "train.epochs=1"])
    log: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        times = interleaved({"jobs 1": timed_reproduce(cfg, 1, Path(tmp), log),
                             "jobs 2": timed_reproduce(cfg, 2, Path(tmp), log)}, args.rounds, warmup=0)
    samples = len(TARGETS) * args.n_train
    results = {
        "environment": environment(), "torch_threads": torch.get_num_threads(), "stages": TARGETS,
        "n_train": args.n_train, "epochs": 1, "rounds": args.rounds,
        "command": f"python benchmarks/jobs.py --rounds {args.rounds} --n-train {args.n_train}",
        "seconds_per_round": times, "runs": log,
        "samples_per_s": {name: samples / statistics.median(t) for name, t in times.items()},
        "jobs2_vs_jobs1": ratio(times["jobs 1"], times["jobs 2"]),
    }
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("samples_per_s", "jobs2_vs_jobs1", "seconds_per_round")}, indent=2))


if __name__ == "__main__":
    main()
