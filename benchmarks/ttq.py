"""Time to quality: wall seconds until the lecture's d = 8 autoencoder reaches, on the full MNIST test set, the
quality the lecture's recipe reaches after 10 epochs (per-pixel MSE <= 0.0162 and digit kept >= 0.948, the
numbers of docs/results.md), for the lecture's recipe and for aelab's default recipe, both trained here.

    python benchmarks/ttq.py [--recipes lecture,default] [--max-epochs 12] [--out docs/ttq.json]

A recipe is the `train` section of a preset: `lecture` (Adam 1e-3, batch 100, constant, fp32) or `default`
(the TrainConfig defaults: see aelab.recipe).  A constant-rate recipe is trained one epoch at a time (resumed
bit for bit) until it reaches the target or --max-epochs; a one-cycle recipe runs its own number of epochs,
since its schedule depends on it.  After every epoch the full test set is scored: MSE (inside the trainer)
and digit kept (the shipped classifier); the time to quality is the sum of the epochs' wall seconds (training +
test MSE) and of the digit-kept evaluations, up to the first epoch that meets both targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from aelab.config import ModelConfig, TrainConfig, build_section, parse_set, resolve
from aelab.data import load, to_float
from aelab.evaluator import judge_for
from aelab.experiments import build_model
from aelab.metrics import reconstruct
from aelab.runs import environment
from aelab.train import fit, load_checkpoint

TARGET_MSE, TARGET_KEPT = 0.0162, 0.948


def recipe(name: str, sets=()) -> TrainConfig:
    """The lecture preset's train section, or the TrainConfig defaults with ``sets`` ("train.lr=3e-3", ...)."""
    if name == "lecture":
        return resolve("lecture").train
    return build_section(TrainConfig, {key: value for _, key, value in map(parse_set, sets)}, "train")


def time_to_quality(name: str, cfg: TrainConfig, max_epochs: int, data, judge, d: int = 8) -> dict:
    train, test = data
    x_train, x_test = to_float(train.images), to_float(test.images)
    m = ModelConfig(d=d)
    epochs, reached, wall = [], None, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        model = build_model(m, train.shape, cfg.seed)
        stepwise = cfg.schedule == "constant"
        plan = range(1, max_epochs + 1) if stepwise else [cfg.epochs]
        for k in plan:
            h = fit(model, x_train, x_test, dataclasses.replace(cfg, epochs=k), run_dir, resume=True,
                    progress=False)
            new = h.epochs[len(epochs):]
            judge_model = build_model(m, train.shape, cfg.seed)
            for e in new:  # score each new epoch's checkpoint
                ckpt = run_dir / "checkpoints" / f"epoch-{e['epoch']:04d}.json"
                t0 = time.perf_counter()
                load_checkpoint(ckpt, judge_model)
                kept = judge.class_kept(reconstruct(judge_model, x_test), test.labels)
                kept_s = time.perf_counter() - t0
                wall += e["seconds"] + kept_s
                epochs.append({**e, "digit_kept": kept, "kept_seconds": kept_s, "wall": wall})
                print(f"{name}: epoch {e['epoch']}: test mse {e['test_mse']:.5f}  kept {kept:.4f}  "
                      f"({e['seconds']:.1f} s, total {wall:.0f} s)", flush=True)
                if reached is None and e["test_mse"] <= TARGET_MSE and kept >= TARGET_KEPT:
                    reached = {"epoch": e["epoch"], "seconds": wall}
            if reached is not None and stepwise:
                break
    return {"recipe": name, "train": dataclasses.asdict(cfg), "precision": h.precision, "epochs": epochs,
            "reached": reached}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default="lecture,default")
    ap.add_argument("--max-epochs", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[], help="train.KEY=VALUE for the default recipe (trials)")
    args = ap.parse_args()
    data = (load("mnist", "train"), load("mnist", "test"))
    judge = judge_for(*data, progress=False)
    results = {"environment": environment(), "torch_threads": torch.get_num_threads(),
               "target": {"mse": TARGET_MSE, "digit_kept": TARGET_KEPT},
               "runs": [time_to_quality(n, recipe(n, args.set), args.max_epochs, data, judge)
                        for n in args.recipes.split(",")]}
    by = {r["recipe"]: r for r in results["runs"]}
    if all(by.get(n, {}).get("reached") for n in ("lecture", "default")):
        results["default_over_lecture"] = by["default"]["reached"]["seconds"] / by["lecture"]["reached"]["seconds"]
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "runs"} | {
        r["recipe"]: r["reached"] for r in results["runs"]}, indent=2))


if __name__ == "__main__":
    main()
