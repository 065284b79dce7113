"""Benchmarks: ratios against a baseline measured in the same run, medians of repeats; where two trainers are
compared, each ratio is the median over rounds that run every contender once (``interleaved``).

    python benchmarks/run.py [--repeats 5] [--out docs/benchmarks.json] [--only CONTENDER ...]

1. Training step of the lecture's autoencoder (batch 100, d = 8): contiguous (baseline) vs channels_last,
   and the achieved GFLOP/s (3 x forward MACs x 2 flops per image).
2. Reference operators (float64 NumPy) vs torch.nn.functional on one conv2d / conv_transpose2d:
   the price of clarity.
3. Training throughput: the lecture's loop exactly as printed (baseline) vs aelab's trainer (``fit``), in
   samples/s on random data of MNIST shape, with the achieved GFLOP/s and its share of the convolution peak
   measured in the same run (one large oneDNN convolution, fp32; bf16 too, reported as measured, with the
   CPU flags that say whether bf16 is native).  Each contender runs in a process of its own
   (``interleaved_processes``): the trainer changes a process-wide setting, the C library's allocator
   (``aelab.recipe.keep_freed_memory``), which must not reach the baseline.
4. Inference (encode + decode) throughput, contiguous (baseline) vs channels_last.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from aelab import ops
from aelab.io import atomic_write_text
from aelab.models import AutoEncoder
from aelab.models.summary import layer_table
from aelab.recipe import ALLOCATOR_ENV
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


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each of ``fns`` (name -> callable), run in rounds, one call of each per round, in an order that
    rotates from round to round: on a shared CPU whose speed drifts, a ratio of two times taken in the same
    round is far steadier than a ratio of two blocks of repeats taken minutes apart."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
    return times


GPU_SAMPLES = 60000  # images per timed pass on a GPU (throughput below)
SYSTEM_ALLOCATOR = {ALLOCATOR_ENV: "system"}  # a contender's environment: the C library's allocator as it comes


def _serve(kind: str, settings: dict, env: dict, n: int, conn) -> None:
    """One contender's process: build it on n seeded random images, then run it once per request and answer
    with the minor page faults the run took (fresh pages from the kernel), until told to stop
    (``interleaved_processes``)."""
    os.environ.update(env)
    torch.manual_seed(1234)
    x = torch.rand(n, 1, 28, 28)
    if kind == "lecture loop":
        if settings.get("keep_freed_memory"):
            from aelab.recipe import keep_freed_memory

            keep_freed_memory()
        fn = lecture_loop(x)
    else:
        fn = aelab_fit(x, **settings)
    conn.send("ready")
    while conn.recv():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        fn()
        conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)


def interleaved_processes(contenders: dict[str, tuple[str, dict, dict]], n: int, repeats: int,
                          warmup: int = 1) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """``interleaved`` with each contender (name -> (kind, settings, environment variables)) in a spawned
    process of its own that waits while the others run: what one changes for its whole process cannot reach
    the others.  Returns the seconds of each timed call (measured here: a pipe's round trip, well under a
    millisecond, included) and the minor page faults of each call (all calls, warm-up first)."""
    ctx = multiprocessing.get_context("spawn")
    conns, procs = {}, []
    faults: dict[str, list[int]] = {name: [] for name in contenders}
    try:
        for name, (kind, settings, env) in contenders.items():
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(kind, settings, env, n, child), daemon=True)
            proc.start()
            conns[name] = parent
            procs.append(proc)
        for conn in conns.values():
            conn.recv()

        def call(name: str) -> None:
            conns[name].send(True)
            faults[name].append(conns[name].recv())
        times = interleaved({name: (lambda name=name: call(name)) for name in conns}, repeats, warmup)
        return times, {name: f[warmup:] for name, f in faults.items()}
    finally:
        for conn in conns.values():
            try:
                conn.send(False)
            except OSError:  # that process has died; its error is already on its way up
                pass
        for proc in procs:
            proc.join(timeout=30)


def _batch(contender: tuple[str, dict, dict]) -> int:
    """The batch size of a contender of ``interleaved_processes``."""
    from aelab.config import TrainConfig

    kind, settings, _ = contender
    return 100 if kind == "lecture loop" else settings.get("batch_size", TrainConfig().batch_size)


def max_weight_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Largest absolute difference between the parameters of two models of one architecture."""
    return max(float((p - q).detach().abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def ratio(base: list[float], other: list[float]) -> float:
    """Median over rounds of base / other: how many times faster ``other`` ran than ``base``."""
    return statistics.median(b / o for b, o in zip(base, other, strict=True))


def ratio_quartiles(base: list[float], other: list[float]) -> list[float] | None:
    """The quartiles over rounds of base / other (the spread of ``ratio``); None from fewer than 2 rounds."""
    ratios = [b / o for b, o in zip(base, other, strict=True)]
    return statistics.quantiles(ratios, n=4) if len(ratios) > 1 else None


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
    ap.add_argument("--only", action="append", default=[], metavar="CONTENDER",
                    help="the throughput section alone, with the lecture loop, fit default and these variants "
                         "(repeatable; names as in the output's tried_vs_lecture): fewer contenders per round put "
                         "the two times of each ratio closer together")
    args = ap.parse_args()
    results = {"environment": environment(), "repeats": args.repeats}
    if args.only:
        results["throughput"] = throughput(args.repeats, only=args.only)
        return _write(results, args.out)

    macs = sum(r.macs for r in layer_table(AutoEncoder(8), (1, 28, 28)))
    flops_per_step = 3 * 2 * macs * 100 * 10  # 10 steps of batch 100
    steps = interleaved({"contiguous": train_steps(torch.contiguous_format),
                         "channels_last": train_steps(torch.channels_last)}, args.repeats, warmup=2)
    base, cl = (statistics.median(steps[k]) for k in ("contiguous", "channels_last"))
    results["train_step"] = {
        "contiguous_s_per_10_steps": base, "channels_last_s_per_10_steps": cl,
        "speedup_channels_last": ratio(steps["contiguous"], steps["channels_last"]),
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
    results["throughput"] = throughput(args.repeats)
    _write(results, args.out)


def _write(results: dict, out: Path | None, quiet: bool = False) -> None:
    """Print ``results`` as JSON (unless ``quiet``) and write them to ``out`` atomically: a run stopped while
    writing leaves the file it had before, never half of one."""
    text = json.dumps(results, indent=2)
    if not quiet:
        print(text)
    if out:
        atomic_write_text(out, text + "\n")


def measure_afresh() -> None:
    """Make this process time aelab's ways of computing for itself (``aelab.timings``' fresh mode): a benchmark
    of those ways measures them, and neither reads what an earlier run kept for the machine nor keeps its own."""
    from aelab import timings

    os.environ[timings.ENV] = "fresh"


def step_rounds_args(doc: str) -> argparse.Namespace:
    """The arguments of a benchmark timing a training step's parts in interleaved rounds (``--rounds`` of
    ``--steps`` calls at ``--threads`` threads, ``--out`` its JSON), parsed; torch set to those threads, with
    freed memory kept as ``fit`` keeps it (``aelab.recipe.keep_freed_memory``), and aelab's ways measured afresh
    (``measure_afresh``)."""
    from aelab.recipe import keep_freed_memory

    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    measure_afresh()
    return args


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx2", "avx512f")))


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the same script on a GPU machine
# fp32 is fp32 on both sides of every ratio: aelab's trainer turns cuDNN's TF32 off on a GPU, so the lecture
# loop runs without it too
torch.backends.cudnn.allow_tf32 = False


def synced(fn):
    """fn, then wait for the GPU (so that timings cover the work, not its launch)."""
    def run():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
    return run


def conv_peak(dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of one large 3x3 convolution (batch 32, 64 -> 64 channels, 56x56), channels_last, forward."""
    x = torch.randn(32, 64, 56, 56).to(DEVICE, dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3).to(DEVICE, dtype).contiguous(memory_format=torch.channels_last)
    flops = 2 * 32 * 64 * 56 * 56 * 64 * 9
    with torch.no_grad():
        return flops / median_seconds(synced(lambda: F.conv2d(x, w, padding=1)), repeats) / 1e9


def lecture_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                  batch_size: int = 100) -> None:
    """One epoch of the slide's training loop, as printed: no shuffle, contiguous tensors."""
    for input in x.split(batch_size):
        output = model.decode(model.encode(input))
        loss = 0.5 * (output - input).pow(2).sum() / input.size(0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def lecture_loop(x: torch.Tensor, batch_size: int = 100):
    """The slide's loop with its Adam(1e-3), one epoch over x per call."""
    torch.manual_seed(0)
    model = AutoEncoder(8).to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = x.to(DEVICE)
    return synced(lambda: lecture_epoch(model, optimizer, x, batch_size))


def aelab_fit(x: torch.Tensor, choice: dict | None = None, **train):
    """aelab's trainer, one epoch over x, with its defaults (the default recipe: see aelab.recipe) or the
    ``train`` settings given; the per-epoch test evaluation runs on 100 images so that it does not dominate.
    choice: a precision choice measured once beforehand (``precision_probe``), used by every call."""
    from aelab.config import TrainConfig
    from aelab.train import fit

    @synced
    def run():
        torch.manual_seed(0)
        with quiet_collapse_warning():
            fit(AutoEncoder(8), x, x[:100], TrainConfig(**{"epochs": 1, "device": DEVICE.type, **train}),
                progress=False, precision=choice)
    return run


@contextlib.contextmanager
def quiet_collapse_warning():
    """Drop ``fit``'s warning that the model gives the same picture for every input: on random images that is the
    best a model can do, so the warning is true for every contender of every round and tells nothing; any other
    line written to stderr meanwhile is passed on."""
    import re
    import sys

    caught = io.StringIO()
    try:
        with contextlib.redirect_stderr(caught):
            yield
    finally:
        collapse = re.compile(r"^aelab: warning: epoch \d+: test MSE .* \(collapsed, or barely trained\)")
        rest = [line for line in caught.getvalue().splitlines(keepends=True) if not collapse.match(line)]
        sys.stderr.write("".join(rest))


def precision_probe() -> dict:
    """What ``precision = auto`` measures at the start of a run (fp32 against bf16 on one batch of the default
    recipe's size), and how long it takes."""
    from aelab.config import TrainConfig
    from aelab.train import choose_precision

    torch.manual_seed(0)
    fmt = torch.channels_last if DEVICE.type == "cpu" else torch.contiguous_format
    model = AutoEncoder(8).to(DEVICE, memory_format=fmt)
    x = torch.rand(TrainConfig().batch_size, 1, 28, 28)
    t0 = time.perf_counter()
    choice = choose_precision(model, x, TrainConfig(device=DEVICE.type), DEVICE, fmt, n_proc=1)
    return {**choice, "probe_seconds": time.perf_counter() - t0}


def kernel_probe(precision: str) -> dict:
    """What ``kernels = auto`` measures at the start of a run in ``precision`` on a CPU (``aelab.kernels``: the
    decoder's last layer by taps against PyTorch's kernels, on one batch of the default recipe's size), and how
    long it takes."""
    from aelab.config import TrainConfig
    from aelab.train import choose_kernels

    torch.manual_seed(0)
    fmt = torch.channels_last if DEVICE.type == "cpu" else torch.contiguous_format
    model = AutoEncoder(8).to(DEVICE, memory_format=fmt)
    x = torch.rand(TrainConfig().batch_size, 1, 28, 28)
    t0 = time.perf_counter()
    choice = choose_kernels(model, x, TrainConfig(device=DEVICE.type), DEVICE, fmt, 1, precision)
    return {**choice, "probe_seconds": time.perf_counter() - t0}


def inference(memory_format, x: torch.Tensor):
    torch.manual_seed(0)
    model = AutoEncoder(8).eval().to(DEVICE, memory_format=memory_format)
    xb = x.to(DEVICE).contiguous(memory_format=memory_format)

    @synced
    def run():
        with torch.inference_mode():
            for chunk in xb.split(1000):
                model.decode(model.encode(chunk))
    return run


def throughput(repeats: int, only: list[str] | None = None) -> dict:
    # on a GPU 3000 samples are 60 steps of about a millisecond, and a run's fixed costs (building the trainer,
    # recording the CUDA graph, the test evaluation) would be timed rather than training: there the sample is
    # one epoch of MNIST's size (30000 until 2026-11-26: docs/benchmarks-h100*.json)
    n = GPU_SAMPLES if DEVICE.type == "cuda" else 3000
    x = torch.rand(n, 1, 28, 28)  # for inference below
    macs = sum(r.macs for r in layer_table(AutoEncoder(8), (1, 28, 28)))
    flops_per_sample = 3 * 2 * macs  # forward + backward
    # the default recipe measures fp32 against bf16 once per run (precision = auto); on 3000 samples that
    # one-time probe would dominate, so it is timed on its own and the steady state uses its choice
    probe = precision_probe()
    # timed inside every fit call too (it is part of a run's cost), reported here alone, in the precision chosen
    kernels = kernel_probe(probe["precision"])
    # the default trainer and what was tried on the way to it, in the same rounds as the lecture loop
    runs = {"lecture loop": ("lecture loop", {}, {}), "fit default": ("fit", {"choice": probe}, {}),
            "fit default, allocator unchanged": ("fit", {"choice": probe}, SYSTEM_ALLOCATOR),
            "fit default, PyTorch's kernels only": ("fit", {"choice": probe, "kernels": "torch"}, {}),
            "lecture loop, freed memory kept": ("lecture loop", {"keep_freed_memory": True}, {}),
            "fit default, fp32": ("fit", {"precision": "fp32"}, {}),
            "fit default, fp32, PyTorch's kernels only": ("fit", {"precision": "fp32", "kernels": "torch"}, {}),
            "fit batch 100, fp32, channels_last": ("fit", {"batch_size": 100, "precision": "fp32"}, {}),
            "fit batch 100, fp32, contiguous": ("fit", {"batch_size": 100, "precision": "fp32",
                                                        "channels_last": False}, {}),
            "fit batch 100, fp32, contiguous, allocator unchanged": (
                "fit", {"batch_size": 100, "precision": "fp32", "channels_last": False}, SYSTEM_ALLOCATOR),
            "fit batch 100, bf16 autocast": ("fit", {"batch_size": 100, "precision": "bf16"}, {}),
            "fit batch 250, fp32": ("fit", {"batch_size": 250, "precision": "fp32"}, {}),
            "fit batch 500, fp32": ("fit", {"batch_size": 500, "precision": "fp32"}, {})}
    if only:
        unknown = sorted(set(only) - set(runs))
        if unknown:
            raise SystemExit(f"unknown contender(s) {unknown}; choose from {sorted(runs)}")
        runs = {k: v for k, v in runs.items() if k in ("lecture loop", "fit default", *only)}
    times, faults = interleaved_processes(runs, n, repeats)
    lecture, ours = statistics.median(times["lecture loop"]), statistics.median(times["fit default"])
    tried = {name: ratio(times["lecture loop"], t) for name, t in times.items() if name != "lecture loop"}
    # cuDNN's autotuner (fixed shapes, so it may pick faster kernels; not the default) is a global switch: timed
    # in its own block after the rounds, against their lecture-loop median
    if DEVICE.type == "cuda":
        torch.backends.cudnn.benchmark = True
        tried["fit batch 100, fp32, cudnn.benchmark"] = lecture / median_seconds(
            aelab_fit(x, precision="fp32"), max(1, repeats // 2), warmup=1)
        torch.backends.cudnn.benchmark = False
    peak32 = conv_peak(torch.float32, repeats)
    peak16 = conv_peak(torch.bfloat16, max(1, repeats // 2))
    inf_base = median_seconds(inference(torch.contiguous_format, x), repeats)
    inf_cl = median_seconds(inference(torch.channels_last, x), repeats)
    return {
        "samples": n, "device": str(DEVICE), "cpu_flags": cpu_flags(),
        "lecture_loop_samples_per_s": n / lecture, "aelab_fit_samples_per_s": n / ours,
        "aelab_vs_lecture": tried["fit default"], "tried_vs_lecture": tried, "precision_probe": probe,
        "kernel_probe": kernels,
        "seconds_per_round": times,
        "page_faults_per_step": {name: statistics.median(f) / math.ceil(n / _batch(runs[name]))
                                 for name, f in faults.items()},
        "lecture_gflops": n * flops_per_sample / lecture / 1e9, "aelab_gflops": n * flops_per_sample / ours / 1e9,
        "conv_peak_fp32_gflops": peak32, "conv_peak_bf16_gflops": peak16,
        "aelab_share_of_fp32_conv_peak": n * flops_per_sample / ours / 1e9 / peak32,
        "epoch_seconds_lecture_loop": 60000 / (n / lecture), "epoch_seconds_aelab": 60000 / (n / ours),
        "inference_samples_per_s_contiguous": n / inf_base, "inference_samples_per_s_channels_last": n / inf_cl,
        "inference_channels_last_speedup": inf_base / inf_cl,
    }


if __name__ == "__main__":
    main()
