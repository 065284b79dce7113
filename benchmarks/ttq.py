"""Time to quality: wall seconds until the lecture's d = 8 autoencoder reaches, on the full MNIST test set, the
quality the lecture's recipe reaches after 10 epochs (per-pixel MSE <= 0.0162 and digit kept >= 0.948, the
numbers of docs/results.md), for three ways of training it, all run here, one after the other, each in a fresh
process (aelab's trainer changes a process-wide setting, the C library's allocator, that must not reach the
lecture's loop: ``aelab.recipe.keep_freed_memory``):

- ``lecture-loop``: the lecture's recipe in the lecture's loop exactly as printed (no shuffle, contiguous
  tensors, Adam 1e-3, batch 100): what a student who types in the slides gets;
- ``lecture``: the same recipe in aelab's trainer (``--preset lecture``: shuffled, channels_last, fp32), so
  that the ratio to it is the recipe's alone;
- ``default``: aelab's default recipe (the TrainConfig defaults: see aelab.recipe).

    python benchmarks/ttq.py [--recipes lecture-loop,lecture,default] [--also NAME=key:value,...] [--seeds 0]
        [--max-epochs 12] [--out docs/ttq.json]

``--also fp32=precision:fp32`` adds a recipe named fp32: the default with those train settings, run and judged
beside the others (its ratios to the lecture's recipes are reported like the default's).

A constant-rate recipe is trained one epoch at a time (``fit`` resumes bit for bit) until it reaches the target
or --max-epochs; a one-cycle recipe runs its own number of epochs (its schedule depends on it) and is judged at
its end.  After every epoch the full test set is scored (MSE and digit kept by the shipped classifier, from one
reconstruction).  The time to quality is the wall time of the training calls up to the epoch that meets both
targets (for ``fit``: its precision choice, per-epoch test MSE and checkpoints included) plus the one scoring
that confirms it; the scorings of the other epochs only find that epoch and are recorded, not charged.

With several seeds every recipe trains once per seed (the recipes of one seed one after the other, then the next
seed, so that a drifting machine touches all alike), and the verdict is the median over seeds (``verdict``): the
target sits inside the seeds' spread of quality (docs/benchmarks.md, "How the default recipe was chosen"), so one
seed can miss or meet it by chance.  A seed that never reaches the target within --max-epochs counts as slower
than every seed that does; where that makes a recipe's median unknown, its median is only bounded from below (by
the seconds such seeds trained) and a ratio against it only from above.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from run import lecture_epoch

from aelab.config import ModelConfig, TrainConfig, build_section, parse_set, resolve
from aelab.data import load, to_float
from aelab.evaluator import judge_for
from aelab.experiments import build_model
from aelab.io import atomic_write_text
from aelab.metrics import reconstruct
from aelab.runs import environment
from aelab.train import fit, load_checkpoint, resolve_device

TARGET_MSE, TARGET_KEPT = 0.0162, 0.948
RECIPES = ("lecture-loop", "lecture", "default")


def recipe(name: str, sets=()) -> TrainConfig:
    """The lecture preset's train section, or the TrainConfig defaults with ``sets`` ("train.lr=3e-3", ...)."""
    if name not in RECIPES:
        raise SystemExit(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    if name.startswith("lecture"):
        return resolve("lecture").train
    return build_section(TrainConfig, {key: value for _, key, value in map(parse_set, sets)}, "train")


def also(text: str, sets=()) -> tuple[str, TrainConfig]:
    """'NAME=key:value,...' -> (NAME, the default recipe with ``sets`` and those train settings)."""
    name, _, settings = text.partition("=")
    if not name or name in RECIPES or not settings:
        raise SystemExit(f"--also {text!r}: give NAME=key:value,... with a NAME other than {', '.join(RECIPES)}")
    return name, recipe("default", [*sets, *(f"train.{item.replace(':', '=', 1)}" for item in settings.split(","))])


def score(model: torch.nn.Module, x: torch.Tensor, labels, judge) -> dict:
    """Test MSE per pixel and digit kept of g(f(x)) on the full test set x: (N, 1, 28, 28), and the seconds
    they took."""
    t0 = time.perf_counter()
    x_hat = reconstruct(model, x)
    mse = float((x_hat - x).pow(2).mean())
    kept = judge.class_kept(x_hat, labels)
    return {"test_mse": mse, "digit_kept": kept, "score_seconds": time.perf_counter() - t0}


class LectureLoop:
    """The lecture's loop as printed, one epoch per call, on the device aelab would pick."""

    def __init__(self, model: torch.nn.Module, x_train: torch.Tensor, cfg: TrainConfig):
        self.device = resolve_device(cfg.device)
        self.model, self.x, self.batch = model.to(self.device), x_train.to(self.device), cfg.batch_size
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def __call__(self, epochs: int) -> list[dict]:
        t0 = time.perf_counter()
        lecture_epoch(self.model, self.optimizer, self.x, self.batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return [{"epoch": epochs, "seconds": time.perf_counter() - t0}]


def time_to_quality(name: str, cfg: TrainConfig, max_epochs: int, data, judge, d: int = 8) -> dict:
    train, test = data
    x_train, x_test = to_float(train.images), to_float(test.images)
    m = ModelConfig(d=d)
    model = build_model(m, train.shape, cfg.seed)
    epochs, reached, trained, precision = [], None, 0.0, {"precision": "fp32", "reason": "the lecture's loop"}
    allocator = {"allocator": "system, unchanged", "reason": "the lecture's loop"}
    kernels = {"layers": [], "reason": "the lecture's loop"}
    one_cycle = cfg.schedule != "constant"
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        if name == "lecture-loop":
            train_to = LectureLoop(model, x_train, cfg)
        else:
            def train_to(k: int) -> list[dict]:
                nonlocal precision, allocator, kernels
                h = fit(model, x_train, x_test, dataclasses.replace(cfg, epochs=k), run_dir, resume=True,
                        progress=False)
                precision, allocator, kernels = h.precision, h.allocator, h.kernels
                return h.epochs[len(epochs):]
        judge_model = build_model(m, train.shape, cfg.seed)
        for k in [cfg.epochs] if one_cycle else range(1, max_epochs + 1):
            t0 = time.perf_counter()
            new = train_to(k)
            trained += time.perf_counter() - t0
            for e in new:
                at_end = e["epoch"] == k
                if not at_end:  # an epoch inside a one-cycle run: scored from its checkpoint
                    load_checkpoint(run_dir / "checkpoints" / f"epoch-{e['epoch']:04d}.json", judge_model)
                row = {**e, **score(model if at_end else judge_model, x_test, test.labels, judge)}
                if at_end:
                    row["trained_seconds"] = trained
                epochs.append(row)
                print(f"{name}: epoch {e['epoch']}: test mse {row['test_mse']:.5f}  kept {row['digit_kept']:.4f}  "
                      f"(epoch {e['seconds']:.1f} s" + (f", trained {trained:.0f} s)" if at_end else ")"), flush=True)
                if (reached is None and at_end and row["test_mse"] <= TARGET_MSE
                        and row["digit_kept"] >= TARGET_KEPT):
                    reached = {"epoch": k, "seconds": trained + row["score_seconds"], "trained_seconds": trained,
                               "score_seconds": row["score_seconds"]}
            if reached is not None and not one_cycle:
                break
    return {"recipe": name, "train": dataclasses.asdict(cfg), "precision": precision, "allocator": allocator,
            "kernels": kernels, "epochs": epochs, "reached": reached}


def run_recipe(name: str, cfg: TrainConfig, max_epochs: int, n_train: int | None) -> dict:
    """``time_to_quality`` of one recipe on MNIST (the first n_train training images, or all), in the process
    that calls it."""
    train, test = load("mnist", "train"), load("mnist", "test")
    judge = judge_for(train, test, progress=False)  # the shipped classifier, checked on the full sets
    data = (train.subset(n_train) if n_train else train, test)
    return time_to_quality(name, cfg, max_epochs, data, judge)


def in_fresh_process(fn, *args):
    """fn(*args) in a spawned process of its own, which ends with it."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        return pool.submit(fn, *args).result()


def verdict(runs: list[dict]) -> dict:
    """Per recipe over its seeds' runs (``time_to_quality`` results): how many reached the target, each seed's
    seconds (None: not reached), the median seconds (None where the median seed did not reach it) and a lower
    bound of that median (a seed that did not reach it counted at the seconds it trained)."""
    out = {}
    for name in dict.fromkeys(r["recipe"] for r in runs):
        mine = [r for r in runs if r["recipe"] == name]
        seconds = [r["reached"]["seconds"] if r["reached"] else None for r in mine]
        trained = [r["epochs"][-1].get("trained_seconds", 0.0) if r["epochs"] else 0.0 for r in mine]
        median = statistics.median([math.inf if s is None else s for s in seconds])
        out[name] = {"seeds": [r["train"]["seed"] for r in mine], "reached": sum(s is not None for s in seconds),
                     "seconds": seconds, "median_seconds": None if math.isinf(median) else median,
                     "median_seconds_at_least": statistics.median(
                         [t if s is None else s for s, t in zip(seconds, trained, strict=True)])}
    return out


def ratios(by: dict) -> tuple[dict, dict]:
    """The median seconds of the default (and of each ``--also`` recipe) over each lecture recipe's (a
    ``verdict``), and where the lecture's median is only bounded from below, the upper bound of that ratio."""
    exact, at_most = {}, {}
    for mine, seconds in ((n, v["median_seconds"]) for n, v in by.items() if not n.startswith("lecture")):
        for name in ("lecture-loop", "lecture"):
            if seconds is None or name not in by:
                continue
            if by[name]["median_seconds"] is not None:
                exact[f"{mine}/{name}"] = seconds / by[name]["median_seconds"]
            elif by[name]["median_seconds_at_least"] > 0:
                at_most[f"{mine}/{name}"] = seconds / by[name]["median_seconds_at_least"]
    return exact, at_most


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--also", action="append", default=[], help="NAME=key:value,...: the default with these")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default: the recipe's own, 0)")
    ap.add_argument("--max-epochs", type=int, default=12)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--set", action="append", default=[], help="train.KEY=VALUE for the default recipe (trials)")
    ap.add_argument("--n-train", type=int, default=None, help="first N training images only (a smoke test)")
    args = ap.parse_args()
    configs = {n: recipe(n, args.set) for n in args.recipes.split(",")} | dict(also(a, args.set) for a in args.also)
    names = list(configs)
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [None]
    runs: list[dict] = []
    for seed in seeds:
        for n in names:
            cfg = configs[n] if seed is None else dataclasses.replace(configs[n], seed=seed)
            runs.append(in_fresh_process(run_recipe, n, cfg, args.max_epochs, args.n_train))
            by = verdict(runs)
            exact, at_most = ratios(by)
            results = {"environment": environment(), "torch_threads": torch.get_num_threads(),
                       "target": {"mse": TARGET_MSE, "digit_kept": TARGET_KEPT}, "runs": runs, "verdict": by,
                       "ratios": exact, "ratios_at_most": at_most}
            if args.out:  # after every training: an interrupted benchmark keeps what it measured
                atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
