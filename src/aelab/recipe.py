"""How a model is trained fast: the learning-rate schedule, the batch-size rule and the precision policy.

The lecture's recipe is Adam at a constant 1e-3, batch 100, fp32 (``--preset lecture``: schedule "constant",
lr_scaling "none", precision "fp32").  The other settings are measured choices (docs/benchmarks.md):

- ``schedule = "onecycle"``: the learning rate rises from lr/25 to lr over the first 30 % of the steps
  (``warmup = 0.3``) and anneals to lr/25e4 (cosine) — torch.optim.lr_scheduler.OneCycleLR's defaults, without
  momentum cycling; "onecycle-linear" is the same along straight lines (in 2 epochs neither it nor a warm-up of
  0.1 reached the target reliably: docs/benchmarks.md, "The schedule's shape in 2 epochs").  Computed
  from the step number alone, so a resumed run continues exactly (no scheduler state to store).  The peak,
  8e-3 at batch 100, and batch 50 were chosen over 1.2e-2 at batch 100, which collapsed to the mean image for
  one of three seeds on the full 60000 digits (docs/benchmarks.md, "How the default recipe was chosen").
  Short runs (a few hundred steps) can stay at the mean image from PyTorch's initial weights at any of the rates
  tried, the lecture's constant 1e-3 included; He et al.'s (``model.init = "kaiming"``) did not (docs/benchmarks.md,
  "Short runs"), and ``fit`` warns when a model's test MSE is near the mean image's.
- ``batch_size = 50``: on a CPU about 6 % fewer samples per second than batch 100, for twice the updates per epoch;
  on a GPU a step of this small model costs its kernel launches, which replaying it from a CUDA graph
  (``aelab.cudagraph``) mostly removes; a larger batch is faster still there but needs more epochs.
- ``adam_beta2 = 0.99``: Adam's second-moment average over about 100 steps rather than PyTorch's 1000 (a likely
  reason it pays, not measured: with 0.999 the large gradients of the first steps keep every step small for a
  long part of a 3600-step run).  On a Xeon with AMX it lowered the test MSE after 2 epochs in 6 of 6 seeds, and
  met the target in 3 epochs for 11 of 12 seeds in fp32 (against 10; test MSE lower in 11 of 12 pairs) and 6 of 6
  in bf16 (against 5): docs/benchmarks.md, "Adam's β2".  The lecture's recipe keeps PyTorch's 0.999.
- ``lr_scaling = "sqrt"``: ``train.lr`` is the rate at batch 100 and a batch B uses lr * sqrt(B / 100), the
  square-root rule for Adam (the gradient noise falls as 1/sqrt(B)).
- ``precision = "auto"``: fp32 on an x86-64 CPU without native bf16 (no avx512_bf16, no AMX: ``native_bf16``),
  where bf16 autocast is several times slower (0.29x on a Xeon with avx512f alone, 0.12x on a Zen 3 with AVX2:
  docs/benchmarks-zen3.json);
  elsewhere bf16 autocast (fp32 master weights) only where a short measurement on this machine shows it faster
  than fp32 — on a CPU with avx512_bf16 it is faster (1.43x per step of batch 50 on an AMD EPYC Zen 4, with
  the test MSE of the default recipe's 3 epochs 1.0 % above fp32's: docs/ttq-zen4.json; 2.66x on a Xeon with
  AMX, +1.1 %: docs/ttq-amx.json); the choice and its timings are recorded with the run.
- ``kernels = "auto"``: on a CPU the decoder's last layer, into the image's channel, runs by a matrix product and
  shifted adds where a short measurement in the training's precision shows its forward faster than oneDNN's, a
  transposed convolution adds its bias after the convolution where that measures faster (its gradient is slow
  in PyTorch's CPU backward: the bf16 step 1.12x faster on a Zen 4, two trainings side by side), and under bf16
  the small layers whose bf16 kernels measure slower than their fp32 ones run in fp32
  (``aelab.kernels``; ``fit`` 1.036x in fp32 on an avx512 Xeon: docs/benchmarks-amx-kernels.json; the bf16 step
  1.10x on a Zen 4 at one thread: docs/benchmarks.md, "The decoder's last layer by taps, and small layers in
  fp32, under bf16"); recorded with the run.
- ``warm_epochs = 2`` (a study's plan, ``aelab.pipeline.warm_sources``): in the sweep and the latent study each
  model but the largest-d one of its kind starts from that one's trained weights, all layers but the two at the
  latent (``aelab.models.warm``), and trains 2 epochs instead of 3: a study of the sweep and latent study 0.79x
  the wall on an AMD EPYC Zen 4, test MSE within 1.9 % at every d (docs/benchmarks.md, "The study's models
  warm-started"); 1 epoch missed the target.  ``aelab train`` trains one model, from its own initial weights.
- ``cold_dims = [8]``: the autoencoder at d = 8, the lecture's, trains from its own initial weights all the same,
  for the 3 epochs whose quality the time-to-quality benchmark measures (the lecture recipe's 10-epoch test MSE
  and digit kept: 5 seeds of 5 on an H200, docs/recipe-trials/h200-e3-b50-lr8e-3-s*.json).  Warm-started for 2
  epochs its digit kept fell short of the lecture's 0.948 in 4 studies in a row and in 3 of 8 seeded trials, and
  for 3 in 1 of 4 (docs/benchmarks.md, "The d = 8 autoencoder from its own weights").  In a study with the decoder
  study this model is the decoder study's own transposed one at d = 8, trained once for both.
- ``eval_subset = 2000``: an epoch before the last is scored on the first 2000 test images, the last on all
  10000 (5.2 s saved per such epoch on one thread of a Zen 4: docs/benchmarks.md, "The per-epoch test score").
- freed memory is kept in the process (``keep_freed_memory``): glibc's malloc otherwise hands the tens of
  megabytes of activations of every step back to the system and takes them again, page by page, the next step.
"""

from __future__ import annotations

import ctypes
import math
import os
import platform
import statistics
import time
from contextlib import nullcontext

import torch

SCHEDULES = ("constant", "onecycle", "onecycle-linear")
LR_SCALINGS = ("none", "sqrt")
PRECISIONS = ("auto", "fp32", "bf16")
REFERENCE_BATCH = 100  # the lecture's batch: train.lr is the rate at this batch size
BF16_MIN_SPEEDUP = 1.15  # below this, bf16's rounding is not worth it


def effective_lr(lr: float, batch_size: int, scaling: str) -> float:
    """The peak learning rate at ``batch_size`` for a rate ``lr`` stated at batch 100."""
    return lr * math.sqrt(batch_size / REFERENCE_BATCH) if scaling == "sqrt" else lr


def lr_at(peak: float, schedule: str, step: int, total: int, warmup: float = 0.3, div_factor: float = 25.0,
          final_div_factor: float = 1e4) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total``, as OneCycleLR computes it (its
    ``pct_start`` is ``warmup``, the share of the steps spent rising from peak / div_factor to the peak):
    "onecycle" rises and falls along cosines, "onecycle-linear" along straight lines (OneCycleLR's
    ``anneal_strategy="linear"``), both down to peak / (div_factor * final_div_factor); "constant" is the peak."""
    if schedule == "constant":
        return peak
    initial = peak / div_factor
    final = initial / final_div_factor
    up_end = float(warmup * total) - 1

    def anneal(start: float, end: float, pct: float) -> float:
        if schedule == "onecycle-linear":
            return start + (end - start) * pct
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    if step <= up_end:
        return anneal(initial, peak, step / up_end)
    return anneal(peak, final, (step - up_end) / (total - 1 - up_end))


def autocast(device: torch.device, precision: str):
    """The forward pass's context: bf16 autocast (weights stay fp32) or nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def native_bf16(device: torch.device) -> bool | None:
    """Whether ``device`` has bf16 arithmetic in hardware: False for an x86-64 CPU without avx512_bf16 and without
    AMX (there bf16 autocast only converts, and ran 0.29x the speed of fp32 on a Xeon with avx512f, 0.12x on an AMD
    EPYC Zen 3 with AVX2); None where this is not known from flags (a GPU, another architecture, a torch without
    the check), which leaves the choice to ``measure_precision``."""
    if device.type != "cpu" or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(check is None for check in checks):
        return None
    return any(check() for check in checks)


HOPELESS = BF16_MIN_SPEEDUP / 2  # two first pairs this far below the bar end the measurement


def measure_precision(model: torch.nn.Module, loss_fn, x: torch.Tensor, device: torch.device,
                      steps: int = 5) -> dict:
    """Time forward + backward of ``loss_fn(model, x)`` in fp32 and under bf16 autocast, alternating the two
    step by step (one warm-up step each, then ``steps`` pairs whose order flips from pair to pair), and choose
    bf16 when the median of the pairs' fp32 / bf16 time ratios is at least ``BF16_MIN_SPEEDUP``.  When the first
    two pairs' ratios are both below ``HOPELESS`` (bf16 under 0.58x the speed of fp32) the measurement stops
    there: where bf16 is emulated its steps take several times longer, and the remaining pairs would cost more
    than they tell.  Two pairs, in opposite orders, and not one: a single bf16 step slowed by another process
    (on a Zen 4 with native bf16, beside two other jobs, one pair read 0.24x and chose fp32) cannot decide.

    Why pairs: the CPU's speed drifts, and another process can take a core for a moment; a ratio of two steps
    taken back to back is far steadier than a ratio of two blocks of steps taken one after the other (the rule of
    benchmarks/run.py).  Gradients are cleared afterwards and no weight changes; the global RNG is left as it was."""
    supported = device.type != "cuda" or torch.cuda.is_bf16_supported()
    precisions = ("fp32", "bf16") if supported else ("fp32",)
    runs: dict[str, list[float]] = {p: [] for p in precisions}
    stopped = False  # after the first two pairs, bf16 far too slow in both

    def step(precision: str) -> float:
        _sync(device)
        t0 = time.perf_counter()
        with autocast(device, precision):
            loss = loss_fn(model, x)
        loss.backward()
        _sync(device)
        return time.perf_counter() - t0

    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        for precision in precisions:  # warm-up: the first call of each picks and builds its kernels
            step(precision)
        for i in range(steps):
            for precision in precisions[::-1] if i % 2 else precisions:
                runs[precision].append(step(precision))
            stopped = supported and i == 1 and all(
                a / b < HOPELESS for a, b in zip(runs["fp32"], runs["bf16"], strict=True))
            if stopped:
                break
    model.zero_grad(set_to_none=True)
    times = {p: statistics.median(t) for p, t in runs.items()}
    speedup = (statistics.median(a / b for a, b in zip(runs["fp32"], runs["bf16"], strict=True))
               if supported else None)
    choice = "bf16" if speedup is not None and speedup >= BF16_MIN_SPEEDUP else "fp32"
    reason = ("bf16 autocast not supported by this GPU" if speedup is None else
              f"bf16 autocast {speedup:.2f}x the speed of fp32 on this {device.type} "
              f"({'>=' if choice == 'bf16' else '<'} {BF16_MIN_SPEEDUP}; " +
              (f"two paired steps, both below {HOPELESS:.3g}: not measured further)" if stopped
               else f"median of {steps} paired steps)"))
    return {"precision": choice, "seconds_per_step": times, "speedup": speedup, "batch": len(x), "reason": reason}


# glibc's mallopt parameters (malloc.h) and the values set: blocks up to 256 MiB from the heap (a step of batch 500,
# an evaluation batch of 1000 images; glibc versions that cap the threshold at 32 MiB get that), and up to 1 GiB
# of free heap kept rather than returned
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLDS = (256 << 20, 32 << 20)
TRIM_THRESHOLD = 1 << 30
ALLOCATOR_ENV = "AELAB_ALLOCATOR"  # "system" leaves the C library's allocator as it is
_allocator: dict | None = None  # what keep_freed_memory did in this process (it is a process-wide setting)


def keep_freed_memory() -> dict:
    """Make glibc's malloc keep freed memory for the next training step; returns what was done (recorded in
    run.json).  Idempotent, process-wide, and left in place afterwards.

    Why: by default glibc serves large blocks with mmap and gives the top of its heap back to the system when
    it is freed, so a training step of the lecture's model at batch 100 in ``fit`` took about 12000 freshly
    zeroed pages (47 MB) from the kernel, one page fault each, and ran 1.18x slower for it (docs/allocator.json,
    written by benchmarks/allocator.py).  Raising the two thresholds, as ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_`` would at start-up, removes those faults; the price is a process that keeps the
    memory of its largest step until it ends.  Nothing is changed where the user chose
    (``AELAB_ALLOCATOR=system``, those two variables, or another allocator in ``LD_PRELOAD``) or the C library
    is not glibc."""
    global _allocator
    if _allocator is not None:
        return _allocator
    preload = os.environ.get("LD_PRELOAD", "")
    if os.environ.get(ALLOCATOR_ENV, "keep") == "system":
        why = f"{ALLOCATOR_ENV}=system"
    elif any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        why = "MALLOC_*_THRESHOLD_ set in the environment"
    elif any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")):
        why = "another allocator in LD_PRELOAD"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        why = "the C library is not glibc"
    else:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        mmap = next((v for v in MMAP_THRESHOLDS if mallopt(M_MMAP_THRESHOLD, v)), None)
        if mmap is not None and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
            _allocator = {"allocator": "glibc, freed memory kept", "mmap_threshold": mmap,
                          "trim_threshold": TRIM_THRESHOLD}
            return _allocator
        why = "glibc refused the thresholds"
    _allocator = {"allocator": "system, unchanged", "reason": why}
    return _allocator


def describe(train: dict) -> str:
    """One line naming the recipe of a train section (``to_dict(TrainConfig)``), for tables and reports."""
    from aelab.config import LECTURE_RECIPE, TRAIN_BEFORE

    train = {**TRAIN_BEFORE, **train}  # a record written before a setting existed trained with its value then
    lecture = all(train.get(k) == v for k, v in LECTURE_RECIPE.items())
    head = f"{train['epochs']} epoch(s), batch {train['batch_size']}, "
    if lecture:
        return head + "the lecture's recipe: Adam at a constant 1e-3, fp32"
    peak = effective_lr(train["lr"], train["batch_size"], train["lr_scaling"])
    schedule = {"onecycle": f"one-cycle (OneCycleLR's shape, {train['warmup']:g} of the steps rising)",
                "onecycle-linear": f"one-cycle along straight lines ({train['warmup']:g} of the steps rising)"
                }.get(train["schedule"], "constant")
    cold = ", ".join(str(d) for d in train.get("cold_dims") or [])
    warm = (f"; in the sweep and the latent study every model but the largest-d one of its kind (AE or VAE) "
            f"started from that one's trained weights (all layers but the two at the latent) and trained "
            f"{train['warm_epochs']} epoch(s)"
            + (f", but the autoencoder at d = {cold}, from its own initial weights" if cold else "")
            if train.get("warm_epochs") else "")
    return (head + f"aelab's recipe: Adam, {schedule} learning rate peaking at {peak:.2g}"
            + (f" (lr {train['lr']:g} at batch 100, square-root rule)" if train["lr_scaling"] == "sqrt" else "")
            + f", beta2 {train['adam_beta2']:g}, precision {train['precision']}" + warm)
