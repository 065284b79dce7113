"""Adam's implementation in a training step: PyTorch's default on a CPU (``foreach``: a dozen multi-tensor ops
per step) against ``fused=True`` (one kernel over every parameter), the rest of the step as ``fit`` runs it (the
lecture's autoencoder at d = 8, channels_last, the trainer's loss, freed memory kept, bf16 autocast or fp32).

Whole steps of both, in rounds whose order rotates (``run.interleaved``), one process; ratio = median over the
rounds of the two times of a round.  Also the largest difference between the two optimizers' weights after
the same steps from the same start (the implementations round differently, not by more).

    python benchmarks/adam.py [--rounds 21] [--steps 10] [--batches 50,100] [--precisions fp32,bf16] [--out FILE]

bf16 is left out where ``aelab.recipe.native_bf16`` says the CPU has none (it would only emulate it).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from run import _write, interleaved, max_weight_difference, ratio, ratio_quartiles

from aelab.models import AutoEncoder
from aelab.recipe import autocast, keep_freed_memory, native_bf16
from aelab.runs import environment
from aelab.train import training_loss

CPU = torch.device("cpu")


def seeded_batch(batch: int) -> torch.Tensor:
    """The benchmark's one batch of random images: (batch, 1, 28, 28), channels_last, the same on every call."""
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(1)).contiguous(
        memory_format=torch.channels_last)


def trainer(batch: int, precision: str, fused: bool, steps: int):
    """A callable that runs ``steps`` training steps on one seeded batch and returns the last loss; and the
    model it trains."""
    torch.manual_seed(0)
    model = AutoEncoder(8).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True if fused else None)
    x = seeded_batch(batch)

    def run() -> float:
        for _ in range(steps):
            with autocast(CPU, precision):
                loss = training_loss(model, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return loss.item()
    return run, model


def trainer_loss(model: torch.nn.Module, batch: int, precision: str) -> float:
    """The training loss of ``model`` on the benchmark's batch (no step)."""
    with torch.no_grad(), autocast(CPU, precision):
        return training_loss(model, seeded_batch(batch)).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batches", default="50,100")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    keep_freed_memory()  # as fit does
    precisions = [p for p in args.precisions.split(",") if p != "bf16" or native_bf16(CPU) is not False]
    results = []
    for precision in precisions:
        for batch in map(int, args.batches.split(",")):
            (one_a, first_a), (one_b, first_b) = (trainer(batch, precision, f, 1) for f in (False, True))
            one_a(), one_b()
            (foreach, m_foreach), (fused, m_fused) = (trainer(batch, precision, f, args.steps) for f in (False, True))
            times = interleaved({"foreach": foreach, "fused": fused}, args.rounds)
            difference = max_weight_difference(m_foreach, m_fused)
            steps_done = args.steps * (args.rounds + 1)  # the warm-up round too
            # the loss of one more step from where each has got to (the models themselves, not a comparison)
            last_loss = {"foreach": trainer_loss(m_foreach, batch, precision),
                         "fused": trainer_loss(m_fused, batch, precision)}
            results.append({"precision": precision, "batch": batch,
                            "ms_per_step": {k: 1e3 * statistics.median(v) / args.steps for k, v in times.items()},
                            "fused_speedup": ratio(times["foreach"], times["fused"]),
                            "fused_speedup_quartiles": ratio_quartiles(times["foreach"], times["fused"]),
                            "max_weight_difference_after_one_step": max_weight_difference(first_a, first_b),
                            "max_weight_difference": difference, "steps_compared": steps_done,
                            "loss_after": last_loss,
                            "seconds": times})
            print(f"{precision} batch {batch}: fused {results[-1]['fused_speedup']:.3f}x the default step; "
                  f"weights differ by at most {difference:.2e} after {steps_done} steps "
                  f"(loss {last_loss['foreach']:.4f} against {last_loss['fused']:.4f})", flush=True)
    _write({"environment": environment(), "rounds": args.rounds, "steps": args.steps, "results": results},
           args.out)


if __name__ == "__main__":
    main()
