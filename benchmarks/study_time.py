"""The wall time and quality of whole `aelab reproduce` runs, side by side, in one JSON record.

    python benchmarks/study_time.py runs/default-jobs1 runs/default-jobs2 [--out docs/study-time.json]

For each run folder: the command that made it (run.json), its wall seconds and --jobs (stages.json), the seconds
of every stage, where each training stage ran (processor and torch threads: ``aelab.report.ran_on``), and the
scores a reader compares across runs (the sweep's test MSE and class kept per d, the latent study's sample FID
per d and density).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aelab.report import ran_on


def summary(run: Path) -> dict:
    stages = json.loads((run / "stages.json").read_text())
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    command = json.loads((run / "run.json").read_text()).get("command")
    where = {s["name"]: ran_on(run / s["path"]) for s in stages["stages"]}
    sweep = metrics["stages"].get("sweep", {}).get("rows", [])
    latent = metrics["stages"].get("latent", {}).get("rows", [])
    return {
        "run": str(run), "command": command, "wall_seconds": stages["seconds"], "jobs": stages.get("jobs", 1),
        "commit": stages.get("commit"), "stage_seconds": {s["name"]: s["seconds"] for s in stages["stages"]},
        "trained_on": {name: text for name, text in where.items() if text},
        "sweep": [{k: r[k] for k in ("d", "model", "mse", "class_kept") if k in r} for r in sweep],
        "latent_fid": [{k: r[k] for k in ("d", "model", "density", "fid") if k in r} for r in latent if "fid" in r],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rows = [summary(r) for r in args.runs]
    text = json.dumps({"runs": rows}, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    for r in rows:
        print(f"{r['run']}: jobs {r['jobs']}, {r['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
