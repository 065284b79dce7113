"""Trial: short trainings (a few hundred steps, the size of a restorer or of a user's small data set) with the
default recipe and with others: how often does each collapse to the mean image, and how good is it otherwise?

The d = 8 autoencoder trained by ``fit`` itself on the first ``--n-train`` MNIST digits for ``--epochs``, per
recipe and seed, every run on the precision ``fit`` chooses here (measured once, then given to every run); each
scored on the full test set as benchmarks/ttq.py scores (test MSE per pixel, digit kept), and called collapsed
when its test MSE is at least 90 % of the mean training image's (a network whose ReLUs have all died outputs
its last bias, the mean image, for every input).

    python benchmarks/short_runs.py [--n-train 5000] [--epochs 2] [--seeds 0,1,2,3,4,5]
        [--recipe NAME=key:value,key:value ...] [--out FILE]

A recipe is ``default`` (the TrainConfig and ModelConfig defaults), ``lecture`` (``aelab.config.LECTURE_RECIPE``)
or NAME=settings over the defaults, e.g. ``peak4e-3=lr:4e-3`` or ``kaiming=model.init:kaiming``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from run import _write
from ttq import score

from aelab.config import LECTURE_RECIPE, ConfigError, ModelConfig, TrainConfig, build_section, parse_set
from aelab.data import load, to_float
from aelab.evaluator import judge_for
from aelab.experiments import build_model
from aelab.models import AutoEncoder
from aelab.runs import environment
from aelab.train import choose_precision, fit

COLLAPSED = 0.9  # of the mean image's test MSE


def recipe(text: str) -> tuple[str, dict]:
    """'default', 'lecture' or 'NAME=key:value,...' -> (name, {"train": TrainConfig changes, "model": ModelConfig
    changes}); a key is a train setting, or model.KEY; values are read as ``--set`` reads them."""
    if text == "default":
        return text, {"train": {}, "model": {}}
    if text == "lecture":
        return text, {"train": dict(LECTURE_RECIPE), "model": {}}
    name, _, settings = text.partition("=")
    changes: dict[str, dict] = {"train": {}, "model": {}}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition(":")
        section, field, parsed = parse_set(f"{key if '.' in key else 'train.' + key}={value}")
        if section not in changes:
            raise SystemExit(f"recipe {text!r}: {key!r} is neither a train setting nor model.SETTING")
        changes[section][field] = parsed
    try:  # a misspelt key fails here, before any training
        build_section(TrainConfig, changes["train"], "train"), build_section(ModelConfig, changes["model"], "model")
    except ConfigError as e:
        raise SystemExit(f"recipe {text!r}: {e}") from None
    return name, changes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", default="0,1,2,3,4,5")
    ap.add_argument("--recipe", action="append", default=[])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    recipes = dict(recipe(r) for r in (args.recipe or ["default", "lecture"]))
    train, test = load("mnist", "train"), load("mnist", "test")
    judge = judge_for(train, test, progress=False)
    x_train, x_test = to_float(train.images[: args.n_train]), to_float(test.images)
    mean_mse = float((x_train.mean(0, keepdim=True) - x_test).pow(2).mean())
    cpu = torch.device("cpu")
    precision = choose_precision(AutoEncoder(8).to(memory_format=torch.channels_last), x_train,
                                 TrainConfig(), cpu, torch.channels_last, 1)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for name, changes in recipes.items():
            cfg = build_section(TrainConfig, {**changes["train"], "epochs": args.epochs, "seed": seed}, "train")
            model = build_model(build_section(ModelConfig, {"d": 8, **changes["model"]}, "model"), (1, 28, 28), seed)
            t0 = time.perf_counter()
            history = fit(model, x_train, x_test, cfg, progress=False, precision=precision)
            seconds = time.perf_counter() - t0
            s = score(model, x_test, test.labels, judge)
            rows.append({"recipe": name, "settings": changes, "seed": seed, "steps": args.epochs * -(
                -args.n_train // cfg.batch_size), "test_mse": s["test_mse"], "digit_kept": s["digit_kept"],
                "collapsed": s["test_mse"] >= COLLAPSED * mean_mse,
                "test_mse_per_epoch": [e["test_mse"] for e in history.epochs], "seconds": seconds,
                # what ran (a recipe's train.precision overrides the measured choice above)
                "precision_run": history.precision["precision"], "taps": history.kernels["layers"]})
            print(f"{name} seed {seed}: test MSE {s['test_mse']:.5f}, digit kept {s['digit_kept']:.4f}"
                  f"{' COLLAPSED' if rows[-1]['collapsed'] else ''} ({seconds:.0f} s)", flush=True)
            # after every run, so that a trial stopped early keeps what it finished ("complete": false)
            _write(record(args, recipes, precision, mean_mse, rows, complete=False), args.out, quiet=True)
    _write(record(args, recipes, precision, mean_mse, rows, complete=True), args.out)


def record(args, recipes: dict, precision: dict, mean_mse: float, rows: list[dict], complete: bool) -> dict:
    """The trial's JSON record: its settings, the runs so far and a summary per recipe."""
    summary = {name: {"collapsed": sum(r["collapsed"] for r in rows if r["recipe"] == name),
                      "runs": sum(r["recipe"] == name for r in rows),
                      "median_test_mse_not_collapsed": statistics.median(
                          [r["test_mse"] for r in rows if r["recipe"] == name and not r["collapsed"]] or [None])}
               for name in recipes}
    return {"environment": environment(), "n_train": args.n_train, "epochs": args.epochs, "complete": complete,
            "precision": precision, "mean_image_test_mse": mean_mse, "summary": summary, "rows": rows}


if __name__ == "__main__":
    main()
