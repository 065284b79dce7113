"""Benchmarks: ratios against a baseline measured in the same run, medians of repeats.

    python benchmarks/run.py [--repeats 5] [--out docs/benchmarks.json]

1. Training step of the lecture's autoencoder (batch 100, d = 8): contiguous (baseline) vs channels_last,
   and the achieved GFLOP/s (3 x forward MACs x 2 flops per image).
2. Reference operators (float64 NumPy) vs torch.nn.functional on one conv2d / conv_transpose2d:
   the price of clarity.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aelab import ops
from aelab.models import AutoEncoder
from aelab.models.summary import layer_table
from aelab.runs import environment
from aelab.train import lecture_loss


def median_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def train_steps(memory_format, steps: int = 10, batch: int = 100):
    torch.manual_seed(0)
    model = AutoEncoder(8).to(memory_format=memory_format)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=memory_format)

    def run():
        for _ in range(steps):
            loss = lecture_loss(model.decode(model.encode(x)), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    results = {"environment": environment(), "repeats": args.repeats}

    macs = sum(r.macs for r in layer_table(AutoEncoder(8), (1, 28, 28)))
    flops_per_step = 3 * 2 * macs * 100 * 10  # 10 steps of batch 100
    base = median_seconds(train_steps(torch.contiguous_format), args.repeats)
    cl = median_seconds(train_steps(torch.channels_last), args.repeats)
    results["train_step"] = {
        "contiguous_s_per_10_steps": base, "channels_last_s_per_10_steps": cl,
        "speedup_channels_last": base / cl,
        "gflops_contiguous": flops_per_step / base / 1e9, "gflops_channels_last": flops_per_step / cl / 1e9,
        "epoch_seconds_estimate_channels_last": cl / 1000 * 60000,
    }

    rng = np.random.default_rng(0)
    x, w, wt = rng.normal(size=(4, 8, 16, 16)), rng.normal(size=(8, 8, 3, 3)), rng.normal(size=(8, 8, 4, 4))
    xt, wt_t, w_t = torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(w)
    torch_conv = median_seconds(lambda: F.conv2d(xt, w_t, stride=1, padding=1), args.repeats)
    torch_ct = median_seconds(lambda: F.conv_transpose2d(xt, wt_t, stride=2, padding=1), args.repeats)
    results["reference_ops"] = {
        "conv2d_torch_s": torch_conv,
        "conv2d_direct_ratio": median_seconds(lambda: ops.conv2d(x, w, None, 1, 1), args.repeats) / torch_conv,
        "conv2d_matrix_ratio": median_seconds(lambda: ops.conv2d(x, w, None, 1, 1, method="matrix"),
                                              args.repeats) / torch_conv,
        "conv_transpose2d_torch_s": torch_ct,
        "conv_transpose2d_scatter_ratio": median_seconds(lambda: ops.conv_transpose2d(x, wt, None, 2, 1),
                                                         args.repeats) / torch_ct,
        "conv_transpose2d_matrix_ratio": median_seconds(
            lambda: ops.conv_transpose2d(x, wt, None, 2, 1, method="matrix"), args.repeats) / torch_ct,
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
