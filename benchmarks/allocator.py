"""What keeping freed memory in the process is worth (``aelab.recipe.keep_freed_memory``): the same training,
in two processes that differ only in the C library's allocator setting, timed in alternating rounds.

    python benchmarks/allocator.py [--rounds 15] [--n 2000] [--out docs/allocator.json]

For the lecture's loop as printed (batch 100) and aelab's trainer at batch 50 (the default recipe) and 100, one
process keeps freed memory and one leaves glibc's thresholds as they come (``AELAB_ALLOCATOR=system``); each
round runs every process once on n random images of MNIST shape.  Reported: the median over rounds of the
ratio of the two times taken in the same round, and the median minor page faults per training step (fresh
pages the kernel had to hand over, read from getrusage in each process).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from run import DEVICE, SYSTEM_ALLOCATOR, _batch, interleaved_processes, ratio, ratio_quartiles

from aelab.runs import environment

TRAININGS = {"lecture loop": ("lecture loop", {}),
             "fit batch 50 (default recipe)": ("fit", {"precision": "fp32"}),
             "fit batch 100": ("fit", {"batch_size": 100, "precision": "fp32"})}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--n", type=int, default=2000, help="images per timed call")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    contenders = {}
    for name, (kind, settings) in TRAININGS.items():
        kept = {**settings, "keep_freed_memory": True} if kind == "lecture loop" else settings
        contenders[f"{name}, freed memory kept"] = (kind, kept, {})
        contenders[f"{name}, allocator unchanged"] = (kind, settings, SYSTEM_ALLOCATOR)
    times, faults = interleaved_processes(contenders, args.n, args.rounds)
    rows = {}
    for name in TRAININGS:
        kept, unchanged = f"{name}, freed memory kept", f"{name}, allocator unchanged"
        steps = math.ceil(args.n / _batch(contenders[kept]))
        rows[name] = {"speedup_freed_memory_kept": ratio(times[unchanged], times[kept]),
                      "speedup_quartiles": ratio_quartiles(times[unchanged], times[kept]),
                      "seconds_kept": statistics.median(times[kept]),
                      "seconds_unchanged": statistics.median(times[unchanged]),
                      "page_faults_per_step_kept": statistics.median(faults[kept]) / steps,
                      "page_faults_per_step_unchanged": statistics.median(faults[unchanged]) / steps}
    results = {"environment": environment(), "device": str(DEVICE), "n": args.n, "rounds": args.rounds,
               "results": rows, "seconds_per_round": times, "page_faults_per_call": faults}
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
