"""The decoder's last layer by taps (``aelab.kernels``) in whole fp32 training steps, for each decoder of the
decoder study: the lecture's (its last layer a ConvTranspose2d into one channel), resize-nearest and pixel-shuffle
(a Conv2d into one channel).  Per decoder: what ``kernels.choose`` measures for that layer (the no-grad forward,
PyTorch's over the taps'), then whole training steps as ``fit`` runs them (d = 8, channels_last, the trainer's
loss, Adam, freed memory kept, fp32) with the layer by taps against PyTorch's kernels, in rounds whose order
rotates (``run.interleaved``), one process; ratio = median over the rounds of the two times of a round.

    python benchmarks/kernels.py [--rounds 15] [--steps 10] [--batch 50] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from run import _write, interleaved, measure_afresh, ratio, ratio_quartiles

from aelab import kernels
from aelab.models import AutoEncoder
from aelab.models.decoders import DECODERS
from aelab.recipe import keep_freed_memory
from aelab.runs import environment
from aelab.train import training_loss


def trainer(decoder: str, batch: int, steps: int):
    """``steps`` training steps of a fresh seeded model (by PyTorch's kernels unless run inside ``kernels.use``)."""
    torch.manual_seed(0)
    model = AutoEncoder(8, decoder=decoder).to(memory_format=torch.channels_last)
    names = [name for name, m in model.named_modules() if kernels.eligible(m)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)

    def run():
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            training_loss(model, x).backward()
            opt.step()
    return run, model, x, names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    measure_afresh()
    keep_freed_memory()  # as fit does
    results = {"environment": environment(), "batch": args.batch, "precision": "fp32", "decoders": {}}
    for decoder in DECODERS:
        plain, model, x, names = trainer(decoder, args.batch, args.steps)
        choice = kernels.choose(model, lambda model=model, x=x: training_loss(model, x), "fp32")
        taps, taps_model, *_ = trainer(decoder, args.batch, args.steps)
        with kernels.use(taps_model, names):  # as fit runs the layers it chose, for the length of the rounds
            times = interleaved({"PyTorch's kernels": plain, "taps": taps}, args.rounds, warmup=2)
        results["decoders"][decoder] = {
            "layers": names, "choice": choice,
            "ms_per_step": {k: 1e3 * statistics.median(v) / args.steps for k, v in times.items()},
            "taps_speedup": ratio(times["PyTorch's kernels"], times["taps"]),
            "taps_speedup_quartiles": ratio_quartiles(times["PyTorch's kernels"], times["taps"]), "seconds": times}
        r = results["decoders"][decoder]
        print(f"{decoder}: {names} forward {choice.get('speedups')}; whole steps by taps {r['taps_speedup']:.3f}x",
              flush=True)
    _write(results, args.out)


if __name__ == "__main__":
    main()
