"""The bf16 training step with ``aelab.kernels``' choices against PyTorch's kernels for every layer, in the same
process and rounds: the decoder's last layer by taps, and the small layers whose bf16 kernels are slow in fp32.

    python benchmarks/bf16_kernels.py [--rounds 15] [--steps 20] [--threads 1] [--out docs/bf16-kernels.json]

The default recipe's step (the lecture's autoencoder at d = 8, batch 50, channels_last, Adam, bf16 autocast,
freed memory kept) on random images of MNIST's shape, three ways: every layer PyTorch's ("torch"), the layers
``kernels.choose`` picks for taps only ("taps"), and those with the layers it keeps in fp32 ("taps + fp32").
Each round times ``--steps`` steps of each, in an order that rotates (``run.interleaved``); reported: what the
measurement chose and its ratios (and how long it took), the median ms per step of each way, and the median
and quartiles over rounds of the ratio torch / way of steps timed in the same round.  Run two at once, one
thread each, for the study's trainings under ``--jobs 2``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from run import _write, interleaved

from aelab import kernels
from aelab.models import AutoEncoder
from aelab.recipe import keep_freed_memory
from aelab.runs import environment
from aelab.train import lecture_loss

BATCH = 50


def stepper(layers: list[str], fp32: list[str], x: torch.Tensor, steps: int):
    """``steps`` default-recipe bf16 steps of a fresh model with ``layers`` by taps and ``fp32`` in fp32."""
    torch.manual_seed(0)
    model = AutoEncoder(8).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))

    def run():
        with kernels.use(model, layers, fp32):
            for i in range(steps):
                xb = x[i * BATCH:(i + 1) * BATCH]
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = lecture_loss(model(xb), xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    x = torch.rand(args.steps * BATCH, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    probe = AutoEncoder(8).to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    choice = kernels.choose(probe, lambda: probe(x[:BATCH]), "bf16")
    choice["seconds"] = time.perf_counter() - t0
    ways = {"torch": ([], []), "taps": (choice["layers"], []), "taps + fp32": (choice["layers"], choice["fp32_layers"])}
    times = interleaved({name: stepper(*w, x, args.steps) for name, w in ways.items()}, args.rounds)
    result = {"environment": environment(), "threads": args.threads, "rounds": args.rounds, "steps": args.steps,
              "batch": BATCH, "choice": choice, "ways": {}}
    for name in ways:
        ratios = [a / b for a, b in zip(times["torch"], times[name], strict=True)]
        q = statistics.quantiles(ratios, n=4)
        result["ways"][name] = {"layers": ways[name][0], "fp32_layers": ways[name][1],
                                "ms_per_step": statistics.median(times[name]) / args.steps * 1e3,
                                "speedup_vs_torch": statistics.median(ratios), "quartiles": [q[0], q[2]]}
    _write(result, args.out)


if __name__ == "__main__":
    main()
