"""The wall time and quality of whole `aelab reproduce` runs, side by side, in one JSON record.

    python benchmarks/study_time.py runs/default-jobs1 runs/default-jobs2 [--out docs/study-time.json]

For each run folder: the command that made it (run.json), its wall seconds and --jobs (stages.json), the seconds
of every stage, where each training stage ran (processor and torch threads: ``aelab.report.ran_on``), and the
scores a reader compares across runs (the sweep's test MSE and class kept per d, the latent study's sample FID
per d and density).  A run that was stopped before its end gives what its complete stages recorded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aelab.report import ran_on


def unfinished(run: Path) -> dict:
    """What an interrupted run has: its complete stages' seconds (each stage's own record) and where its
    trainings ran; no wall time, no scores (they come from the stages that had not run)."""
    done = {f.parent: json.loads(f.read_text()) for f in sorted(run.glob("stages/*/*/stage.json"))}
    where = {rec["name"]: ran_on(folder) for folder, rec in done.items()}
    return {"run": str(run), "complete": False, "command": None,  # run.json is written at the run's end
            "stage_seconds": {rec["name"]: rec["seconds"] for rec in done.values()},
            "trained_on": {name: text for name, text in where.items() if text},
            "unfinished": sorted(f.parent.name for f in run.glob("stages/*/*.partial"))}


def summary(run: Path) -> dict:
    if not (run / "stages.json").exists():
        return unfinished(run)
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
        print(f"{r['run']}: jobs {r['jobs']}, {r['wall_seconds']:.0f} s" if "wall_seconds" in r else
              f"{r['run']}: unfinished, {len(r['stage_seconds'])} stages complete")


if __name__ == "__main__":
    main()
