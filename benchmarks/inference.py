"""The evaluation batch on a CPU: aelab's evaluation functions at batches of 1000 images against their default
(``aelab.metrics.inference_batch``), in a fresh process with the C library's allocator as it comes and in one
where the trainer's setting keeps freed memory (``aelab.recipe.keep_freed_memory``).

    python benchmarks/inference.py [--rounds 9] [--n 10000] [--out docs/inference.json]

Each process times, on n random images of MNIST shape, the lecture's autoencoder (d = 8) reconstructing them
(``metrics.reconstruct``), encoding them (``latent.encode_all``) and decoding n latents
(``latent.decode_all``), and the fixed classifier's probabilities (``Judge.predict``), each at both batches, in
rounds whose order rotates (``interleaved``).  Reported: the median over rounds of the ratio of the two times
taken in the same round, and the minor page faults (fresh zeroed pages from the kernel) per call.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
from pathlib import Path

import torch
from run import interleaved, ratio

from aelab.runs import environment

LARGE = 1000  # the batch every evaluation used before inference_batch


def contenders(n: int) -> dict[str, dict]:
    """name -> {batch label -> callable}: each evaluation at a batch of 1000 and at aelab's default."""
    from aelab.evaluator import Judge
    from aelab.latent import decode_all, encode_all
    from aelab.metrics import reconstruct
    from aelab.models import AutoEncoder
    from aelab.models.classifier import DigitClassifier

    torch.manual_seed(0)
    ae, judge = AutoEncoder(8), Judge(DigitClassifier(10), accuracy=float("nan"))
    x = torch.rand(n, 1, 28, 28)
    z = encode_all(ae, x)
    calls = {"reconstruct": lambda b: reconstruct(ae, x, b), "encode_all": lambda b: encode_all(ae, x, b),
             "decode_all": lambda b: decode_all(ae, z, b), "classifier": lambda b: judge.predict(x, b)}
    return {name: {str(LARGE): (lambda f=f: f(LARGE)), "default": (lambda f=f: f(None))} for name, f in calls.items()}


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def counting(fn, into: list[int]):
    """fn, appending the minor page faults of each call to ``into``."""
    def call():
        before = faults()
        fn()
        into.append(faults() - before)
    return call


def measure(keep: bool, n: int, rounds: int, threads: int, conn) -> None:
    """One process: optionally keep freed memory first, then time every evaluation at both batches."""
    from aelab.metrics import inference_batch
    from aelab.recipe import keep_freed_memory

    torch.set_num_threads(threads)
    allocator = keep_freed_memory() if keep else {"allocator": "system, unchanged"}
    out = {"allocator": allocator, "default_batch": inference_batch(torch.device("cpu"), 28 * 28)}
    for name, fns in contenders(n).items():
        counted: dict[str, list[int]] = {label: [] for label in fns}
        times = interleaved({label: counting(fn, counted[label]) for label, fn in fns.items()}, rounds)
        out[name] = {"seconds": {label: statistics.median(t) for label, t in times.items()},
                     "speedup_default_vs_1000": ratio(times[str(LARGE)], times["default"]),
                     "page_faults_per_call": {label: statistics.median(c[-rounds:]) for label, c in counted.items()}}
    conn.send(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--n", type=int, default=10000, help="images per timed call")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    ctx = multiprocessing.get_context("spawn")
    results = {"environment": environment(), "n": args.n, "rounds": args.rounds, "threads": args.threads}
    for label, keep in (("allocator as it comes", False), ("freed memory kept", True)):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=measure, args=(keep, args.n, args.rounds, args.threads, child))
        p.start()
        results[label] = parent.recv()
        p.join()
        if p.exitcode:
            sys.exit(f"the process timing {label!r} failed (exit code {p.exitcode})")
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
