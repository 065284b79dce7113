"""The bf16 training step with ``aelab.kernels``' choices against PyTorch's kernels for every layer, in the same
process and rounds: the decoder's last layer by taps, the transposed convolutions' bias added apart, and the small
layers whose bf16 kernels are slow in fp32.

    python benchmarks/bf16_kernels.py [--rounds 15] [--steps 20] [--threads 1] [--out docs/bf16-kernels.json]

The default recipe's step (the lecture's autoencoder at d = 8, batch 50, channels_last, Adam, bf16 autocast,
freed memory kept) on random images of MNIST's shape, these ways: every layer PyTorch's ("torch"), the layers
``kernels.choose`` picks for taps only ("taps"); the taps with the layers it keeps in fp32 when no bias is added
apart ("taps + fp32, the bias fused": its choice before the bias apart, measured again here); the taps with the
bias apart where it chose that ("taps + bias apart"); and its whole choice ("taps + bias apart + fp32").  Each
round times ``--steps`` steps of each, in an order that rotates (``run.interleaved``); reported: what the
measurement chose and its ratios (and how long it took), the median ms per step of each way, and the median
and quartiles over rounds of the ratio torch / way of steps timed in the same round.  Run two at once, one
thread each, for the study's trainings under ``--jobs 2``.
"""

from __future__ import annotations

import statistics
import time
from unittest import mock

import torch
from run import _write, interleaved, step_rounds_args

from aelab import kernels
from aelab.models import AutoEncoder
from aelab.runs import environment
from aelab.train import lecture_loss

BATCH = 50


def stepper(layers: list[str], fp32: list[str], apart: list[str], x: torch.Tensor, steps: int):
    """``steps`` default-recipe bf16 steps of a fresh model with ``layers`` by taps, ``fp32`` in fp32 and the bias
    of ``apart`` added apart."""
    torch.manual_seed(0)
    model = AutoEncoder(8).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))

    def run():
        with kernels.use(model, layers, fp32, apart):
            for i in range(steps):
                xb = x[i * BATCH:(i + 1) * BATCH]
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = lecture_loss(model(xb), xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return run


def main() -> None:
    args = step_rounds_args(__doc__)
    x = torch.rand(args.steps * BATCH, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    probe = AutoEncoder(8).to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    choice = kernels.choose(probe, lambda: probe(x[:BATCH]), "bf16")
    choice["seconds"] = time.perf_counter() - t0
    with mock.patch.dict(kernels.BIAS_APART, clear=True):  # no layer takes its bias apart: the choice before it
        fused = kernels.choose(probe, lambda: probe(x[:BATCH]), "bf16")
    taps, apart = choice["layers"], choice["bias_apart"]
    ways = {"torch": ([], [], []), "taps": (taps, [], []),
            "taps + fp32, the bias fused": (taps, fused["fp32_layers"], []), "taps + bias apart": (taps, [], apart),
            "taps + bias apart + fp32": (taps, choice["fp32_layers"], apart)}
    times = interleaved({name: stepper(*w, x, args.steps) for name, w in ways.items()}, args.rounds)
    result = {"environment": environment(), "threads": args.threads, "rounds": args.rounds, "steps": args.steps,
              "batch": BATCH, "choice": choice, "choice_bias_fused": fused, "ways": {}}
    for name in ways:
        ratios = [a / b for a, b in zip(times["torch"], times[name], strict=True)]
        q = statistics.quantiles(ratios, n=4)
        result["ways"][name] = {"layers": ways[name][0], "fp32_layers": ways[name][1], "bias_apart": ways[name][2],
                                "ms_per_step": statistics.median(times[name]) / args.steps * 1e3,
                                "speedup_vs_torch": statistics.median(ratios), "quartiles": [q[0], q[2]]}
    _write(result, args.out)


if __name__ == "__main__":
    main()
