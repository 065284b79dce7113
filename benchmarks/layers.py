"""Where a training step of the lecture's autoencoder spends its time: each convolution's forward and backward
(torch.profiler, aten ops grouped by input shape) with its achieved GFLOP/s, and the whole step eager against
``torch.compile`` (interleaved rounds, medians).

    python benchmarks/layers.py [--steps 10] [--out docs/layers.json]

Batch 100, d = 8, channels_last on a CPU (aelab's layout there), Adam, the lecture's loss.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from aelab.models import AutoEncoder
from aelab.models.summary import layer_table
from aelab.runs import environment
from aelab.train import lecture_loss

BATCH = 100


def step_fn(model: torch.nn.Module, x: torch.Tensor, compiled: bool = False):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    objective = lambda xb: lecture_loss(model(xb), xb)  # noqa: E731 - the thing compiled
    if compiled:
        objective = torch.compile(objective)

    def step():
        opt.zero_grad(set_to_none=True)
        objective(x).backward()
        opt.step()
    return step


def per_layer(steps: int) -> list[dict]:
    """Self time per step of every convolution forward / backward, keyed by the layer it belongs to."""
    torch.manual_seed(0)
    fmt = torch.channels_last
    model = AutoEncoder(8).to(memory_format=fmt)
    x = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=fmt)
    step = step_fn(model, x)
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    # a layer is known by its input's spatial size and its weight's shape (unique in this model); the forward of a
    # Conv2d shows as mkldnn_convolution inside _convolution, of a ConvTranspose2d as _convolution's own time;
    # backward as convolution_backward, whose inputs are (grad_output, input, weight)
    modules = dict(model.named_modules())
    layers = {}
    for row in layer_table(model, (1, 28, 28)):
        key = (row.in_shape[1:], tuple(modules[row.name].weight.shape))
        layers[key] = {"layer": f"{row.name}: {row.layer}", "macs": row.macs, "forward_ms": 0.0, "backward_ms": 0.0}
    total_ms = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1000 / steps
    for event in prof.key_averages(group_by_input_shape=True):
        kind = {"aten::mkldnn_convolution": "forward_ms", "aten::_convolution": "forward_ms",
                "aten::convolution_backward": "backward_ms"}.get(event.key)
        if kind is None:
            continue
        x, w = event.input_shapes[1:3] if kind == "backward_ms" else event.input_shapes[0:2]
        key = (tuple(x[2:]), tuple(w))
        if key in layers:
            layers[key][kind] += event.self_cpu_time_total / 1000 / steps
    out = []
    for entry in layers.values():
        flops = 2 * entry["macs"] * BATCH
        out.append({**entry, "forward_gflops": flops / entry["forward_ms"] / 1e6 if entry["forward_ms"] else None,
                    "backward_gflops": 2 * flops / entry["backward_ms"] / 1e6 if entry["backward_ms"] else None,
                    "share_of_step": (entry["forward_ms"] + entry["backward_ms"]) / total_ms})
    return out


def eager_vs_compiled(rounds: int = 5, steps: int = 20) -> dict:
    torch.manual_seed(0)
    fmt = torch.channels_last
    x = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=fmt)
    runs = {"eager": step_fn(AutoEncoder(8).to(memory_format=fmt), x),
            "compiled": step_fn(AutoEncoder(8).to(memory_format=fmt), x, compiled=True)}
    for step in runs.values():  # compilation happens here, not in the timing
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, step in runs.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - t0) / steps)
    medians = {name: statistics.median(v) for name, v in times.items()}
    return {"seconds_per_step": medians, "compiled_speedup": medians["eager"] / medians["compiled"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result = {"environment": environment(), "batch": BATCH, "layers": per_layer(args.steps),
              "compile": eager_vs_compiled()}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
