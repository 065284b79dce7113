"""On a GPU: what replaying the lecture model's whole training step from a CUDA graph gains.

The lecture's model is far too small to fill a GPU: a step is a few milliseconds of kernel launches, so a step
costs about the same at batch 50, 100 or 500 (docs/benchmarks.md, "On a GPU").  ``fit`` replays its steps from a
CUDA graph there (``aelab.cudagraph``).  This script times one epoch of the lecture's step (its loss, Adam 1e-3)
over random images held on the GPU, run eagerly as the lecture prints it and through ``aelab.cudagraph``'s
``GraphedStep``, in alternating rounds, at several batch sizes.  It also compares the weights after the same 50
steps: graphed against eager; eager against eager again; eager with the capturable Adam of a graphed step
against eager, and graphed against that (what the graph itself changes); and, as the yardstick of what
rounding alone does, eager against eager with the learning rate changed by 1e-7 of itself (float32's rounding;
capturable Adam computes its bias corrections in float32 on the GPU, the usual one in float64 on the host).
Adam turns tiny differences of near-zero gradients into steps of the size of its learning rate, and training
carries them on.

    python3 benchmarks/cuda_graph.py [--batches 50,100,400] [--repeats 7] [--out docs/cuda-graph-h100.json]

Without a GPU it measures the yardstick alone, on the CPU.  The results file is rewritten after each batch
size, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from run import interleaved, max_weight_difference, ratio, synced

from aelab.cudagraph import GraphedStep, adam
from aelab.models import AutoEncoder
from aelab.runs import environment
from aelab.train import training_loss

N = 30000  # images per timed pass of steps (the graph is recorded before the timing; 600 steps at batch 50)


ROUNDING = 1e-7  # a relative change of the learning rate of the size of float32's rounding


def lecture_step(seed: int = 0, lr: float = 1e-3, device: str = "cuda", capturable: bool = False):
    """The lecture's training step as printed, one call per batch x: (B, 1, 28, 28) on ``device``; capturable:
    with the Adam a graphed step uses (``aelab.cudagraph.adam``), run eagerly."""
    torch.manual_seed(seed)
    model = AutoEncoder(8).to(device)
    optimizer = adam(model.parameters(), lr, torch.device(device), graphed=capturable)

    def step(x: torch.Tensor) -> None:
        loss = training_loss(model, x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    step.model = model
    return step


def graphed_step(seed: int = 0) -> GraphedStep:
    """The same step as ``fit`` runs it on a GPU: capturable Adam, replayed after its eager warm-up steps."""
    torch.manual_seed(seed)
    model = AutoEncoder(8).cuda()
    return GraphedStep(model, adam(model.parameters(), 1e-3, torch.device("cuda"), graphed=True), training_loss)


def weight_difference(a, b, x: torch.Tensor, batch: int, steps: int = 50) -> float:
    """Largest absolute difference between the weights of two steppers after the same ``steps`` batches of x."""
    for xb in x[:steps * batch].split(batch):
        a(xb)
        b(xb)
    if x.is_cuda:
        torch.cuda.synchronize()
    return max_weight_difference(a.model, b.model)


def epoch(step, x: torch.Tensor, batch: int):
    """One call: one epoch of ``step`` over x in batches of ``batch``, waited for."""
    @synced
    def run():
        for xb in x.split(batch):
            step(xb)
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="50,100,400")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32, as in fit
    torch.manual_seed(1234)
    x = torch.rand(N, 1, 28, 28, device=device)
    results = {"environment": environment(), "device": torch.cuda.get_device_name() if gpu else "cpu",
               "samples": N, "batches": {}}
    for batch in map(int, args.batches.split(",")):
        if N % batch:
            raise SystemExit(f"--batches: {batch} does not divide the {N} images (the graph's input has one shape)")
        differences = {"eager vs eager, rate x (1 + 1e-7)": weight_difference(
            lecture_step(device=device), lecture_step(lr=1e-3 * (1 + ROUNDING), device=device), x, batch)}
        row = {"max_weight_difference_after_50_steps": differences}
        if gpu:
            differences["eager vs eager"] = weight_difference(lecture_step(), lecture_step(), x, batch)
            differences["graphed vs eager"] = weight_difference(lecture_step(), graphed_step(), x, batch)
            # what the graph itself changes, Adam's capturable arithmetic aside
            differences["eager capturable vs eager"] = weight_difference(
                lecture_step(), lecture_step(capturable=True), x, batch)
            differences["graphed vs eager capturable"] = weight_difference(
                lecture_step(capturable=True), graphed_step(), x, batch)
            times = interleaved({"eager": epoch(lecture_step(), x, batch), "graphed": epoch(graphed_step(), x, batch)},
                                args.repeats)
            row |= {"eager_samples_per_s": N / statistics.median(times["eager"]),
                    "graphed_samples_per_s": N / statistics.median(times["graphed"]),
                    "graphed_vs_eager": ratio(times["eager"], times["graphed"]), "seconds_per_round": times}
            print(f"batch {batch}: eager {row['eager_samples_per_s']:,.0f} samples/s, graphed "
                  f"{row['graphed_samples_per_s']:,.0f} ({row['graphed_vs_eager']:.2f}x)", flush=True)
        print(f"batch {batch}: weights after 50 steps differ by at most " +
              ", ".join(f"{v:.2e} ({k})" for k, v in differences.items()), flush=True)
        results["batches"][batch] = row
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    if not gpu:
        print("no GPU here: the CUDA graph itself was not measured", flush=True)


if __name__ == "__main__":
    main()
