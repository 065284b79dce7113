"""The per-epoch test score: what ``fit`` spends scoring the test set after an epoch, on all 10000 test images (after
the last epoch) against the first ``train.eval_subset`` of them (after each earlier one).

    python benchmarks/epoch_eval.py [--rounds 7] [--threads 1,2] [--out docs/epoch-eval.json]

In one process that keeps freed memory, as the trainer's does (``aelab.recipe.keep_freed_memory``), the lecture's
autoencoder (d = 8, channels_last, as ``fit`` leaves it between epochs) is scored by ``aelab.train.evaluate_loss``
on random images of MNIST shape, both sizes in rotating rounds (``run.interleaved``), at each thread count.
Reported: the median seconds of each, their ratio, and the seconds an epoch before the last saves.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from run import interleaved, ratio

from aelab.config import TrainConfig
from aelab.io import atomic_write_text
from aelab.models import AutoEncoder
from aelab.recipe import keep_freed_memory
from aelab.runs import environment
from aelab.train import evaluate_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--n", type=int, default=10000, help="test images (MNIST's test set: 10000)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cfg = TrainConfig()
    allocator = keep_freed_memory()
    torch.manual_seed(0)
    model = AutoEncoder(8).to(memory_format=torch.channels_last)
    x = torch.rand(args.n, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    sizes = {"all": args.n, "subset": cfg.eval_subset}
    results = {"environment": environment(), "allocator": allocator, "rounds": args.rounds, "images": sizes,
               "eval_batch_size": cfg.eval_batch_size, "by_threads": {}}
    for threads in map(int, args.threads.split(",")):
        torch.set_num_threads(threads)
        times = interleaved({k: (lambda n=n: evaluate_loss(model, x[:n], cfg.eval_batch_size))
                             for k, n in sizes.items()}, args.rounds)
        med = {k: statistics.median(t) for k, t in times.items()}
        results["by_threads"][threads] = {"seconds": med, "all_vs_subset": ratio(times["all"], times["subset"]),
                                          "saved_per_epoch_s": med["all"] - med["subset"]}
        print(threads, json.dumps(results["by_threads"][threads]), flush=True)
    if args.out:
        atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
