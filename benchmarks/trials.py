"""The recipe trials as one table: ``benchmarks/ttq.py`` outputs (files, or folders of them), grouped by recipe,
one row per recipe and length with each seed's test MSE and digit kept after its last epoch; for the lecture's
constant-rate recipe after epoch 10, the epoch that defines the target.

    python benchmarks/trials.py [PATH ...] [--glob 'h200-*.json']      (default: docs/recipe-trials)

Only quality is compared across files: trials that ran side by side on one machine have meaningless seconds.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def recipe_name(train: dict, trainer: str = "") -> str:
    if trainer == "lecture-loop":
        return f"constant {train['lr']:g}, batch {train['batch_size']}, the lecture's loop as printed"
    if train["schedule"] == "constant":
        return f"constant {train['lr']:g}, batch {train['batch_size']}"
    rule = " (at batch 100)" if train["lr_scaling"] == "sqrt" and train["batch_size"] != 100 else ""
    return f"one-cycle to {train['lr']:g}{rule}, batch {train['batch_size']}"


def rows(files: list[Path]) -> list[dict]:
    out = []
    for path in files:
        result = json.loads(path.read_text())
        target = result["target"]
        for run in result["runs"]:
            last = run["epochs"][-1]
            if run["train"]["schedule"] == "constant":
                last = next((e for e in run["epochs"] if e["epoch"] == 10), last)
            out.append({"recipe": recipe_name(run["train"], run["recipe"]), "epochs": last["epoch"],
                        "seed": run["train"]["seed"],
                        "mse": last["test_mse"], "kept": last["digit_kept"],
                        "met": last["test_mse"] <= target["mse"] and last["digit_kept"] >= target["digit_kept"],
                        "file": path.name})
    return out


def table(found: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in found:
        groups[(r["recipe"], r["epochs"])].append(r)
    lines = ["| recipe | epochs | per seed: test MSE / digit kept | target met |", "| --- | --- | --- | --- |"]
    for (recipe, epochs), runs in sorted(groups.items()):
        runs.sort(key=lambda r: (r["seed"], r["file"]))
        cells = "; ".join(f"s{r['seed']}: {r['mse']:.5f} / {r['kept']:.4f}" for r in runs)
        lines.append(f"| {recipe} | {epochs} | {cells} | {sum(r['met'] for r in runs)} of {len(runs)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="*", type=Path, default=[Path("docs/recipe-trials")])
    ap.add_argument("--glob", default="*.json", help="which files of a folder")
    args = ap.parse_args()
    files = [f for p in args.paths for f in (sorted(p.glob(args.glob)) if p.is_dir() else [p])]
    print(table(rows(files)))


if __name__ == "__main__":
    main()
