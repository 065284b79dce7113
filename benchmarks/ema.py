"""Trial: would an exponential moving average (EMA) of the weights let the default recipe reach the time-to-quality
target (benchmarks/ttq.py: test MSE <= 0.0162 and digit kept >= 0.948 at d = 8) in fewer epochs?

The default recipe (the TrainConfig defaults: batch 50, one-cycle, the precision ``fit`` would choose here)
trained for ``--epochs`` on all 60000 digits, per seed in turn; after every step each average moves towards the
weights, ``ema <- ema + (1 - decay_t) (w - ema)`` with the warm-up ``decay_t = min(decay, (1 + t) / (10 + t))``
(as timm's ModelEmaV2 / the TF EMA with num_updates), so that the random initial weights do not linger in it.
After every epoch the raw weights and every average are scored on the full test set the way ttq.py scores.

    python benchmarks/ema.py [--epochs 2] [--seeds 0,1,2] [--decays 0.99,0.995,0.998] [--out FILE]

The loop is the trainer's step (``aelab.train.training_loss`` under the recipe's precision, the trainer's data
order and learning rates) written out, because ``fit`` has no per-step hook; it leaves out what does not touch
the weights (checkpoints, the per-epoch test MSE).
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import torch
from run import _write
from ttq import TARGET_KEPT, TARGET_MSE, score

from aelab.config import TrainConfig
from aelab.data import load, to_float
from aelab.evaluator import judge_for
from aelab.models import AutoEncoder
from aelab.recipe import autocast, effective_lr, keep_freed_memory, lr_at
from aelab.runs import environment
from aelab.train import choose_precision, epoch_order, training_loss


def averaged(model: torch.nn.Module, weights: list[torch.Tensor]) -> torch.nn.Module:
    """A copy of ``model`` holding ``weights`` (one tensor per parameter, in order)."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p, w in zip(out.parameters(), weights, strict=True):
            p.copy_(w)
    return out


def trial(seed: int, epochs: int, decays: list[float], data, judge) -> list[dict]:
    """One training of d = 8 with the default recipe; per epoch the scores of the raw and averaged weights."""
    x_train, x_test, labels = data
    cfg = TrainConfig(epochs=epochs, seed=seed)
    cpu, fmt = torch.device("cpu"), torch.channels_last
    torch.manual_seed(seed)
    model = AutoEncoder(8).to(memory_format=fmt)
    precision = choose_precision(model, x_train, cfg, cpu, fmt, 1)["precision"]
    peak = effective_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling)
    optimizer = torch.optim.Adam(model.parameters(), lr=peak, betas=(0.9, cfg.adam_beta2))
    emas = {d: [p.detach().clone() for p in model.parameters()] for d in decays}
    steps = math.ceil(len(x_train) / cfg.batch_size)
    rows, seconds = [], 0.0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for step, idx in enumerate(epoch_order(len(x_train), seed, epoch, cfg.shuffle).split(cfg.batch_size)):
            t = epoch * steps + step
            for group in optimizer.param_groups:
                group["lr"] = lr_at(peak, cfg.schedule, t, epochs * steps)
            x = x_train[idx].contiguous(memory_format=fmt)
            with autocast(cpu, precision):
                loss = training_loss(model, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            weights = [p.detach() for p in model.parameters()]
            for decay, ema in emas.items():
                torch._foreach_lerp_(ema, weights, 1 - min(decay, (1 + t) / (10 + t)))
        seconds += time.perf_counter() - t0
        row = {"seed": seed, "epoch": epoch + 1, "precision": precision, "train_seconds": seconds,
               "raw": score(model, x_test, labels, judge)}
        row.update({f"ema {d:g}": score(averaged(model, ema), x_test, labels, judge) for d, ema in emas.items()})
        for key in ["raw", *(f"ema {d:g}" for d in decays)]:
            row[key]["target_met"] = row[key]["test_mse"] <= TARGET_MSE and row[key]["digit_kept"] >= TARGET_KEPT
        print({k: (v["test_mse"], v["digit_kept"]) if isinstance(v, dict) else v for k, v in row.items()},
              flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--decays", default="0.99,0.995,0.998")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    keep_freed_memory()  # as fit does
    train, test = load("mnist", "train"), load("mnist", "test")
    judge = judge_for(train, test, progress=False)
    data = (to_float(train.images), to_float(test.images), test.labels)
    decays = [float(d) for d in args.decays.split(",")]
    rows = [r for s in args.seeds.split(",") for r in trial(int(s), args.epochs, decays, data, judge)]
    _write({"environment": environment(), "epochs": args.epochs, "decays": decays,
            "target": {"test_mse": TARGET_MSE, "digit_kept": TARGET_KEPT}, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
