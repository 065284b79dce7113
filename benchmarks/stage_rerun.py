"""Stages recomputed from a finished run's cached models, by this checkout and by an earlier commit, in
alternating rounds: what a change to the evaluation code is worth where a user meets it (a latent-study setting
changed, the sweep redone), in a fresh process that trained nothing.

    python benchmarks/stage_rerun.py runs/default-jobs1 --old 64b9746 --stage sweep --stage latent \
        [--rounds 2] [--out docs/stage-rerun.json]

Each round copies the run folder twice without the named stages and recomputes them with the run's own command
(``run.json``) plus ``--stage``: once with this checkout, once with ``--old`` (a git worktree of it, first on
PYTHONPATH), in an order that alternates from round to round.  Reported: every stage's seconds (from the copy's
stages.json) and the whole command's wall seconds ("command", with every stage it computed: a version may
split a stage into several), the median ratio old / new of the times taken in the same round, and the stages'
rows, so that a reader sees the results agree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aelab.runs import environment

REPO = Path(__file__).resolve().parents[1]


def recompute(run: Path, stages: list[str], src: Path, work: Path) -> dict:
    """Copy ``run`` without ``stages``, recompute them with the code in ``src``; seconds and rows per stage."""
    copy = work / "run"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(run, copy)
    for name in stages:
        shutil.rmtree(copy / "stages" / name, ignore_errors=True)
    command = json.loads((run / "run.json").read_text())["command"]
    args = command[command.index("reproduce"):]
    args[args.index("--out") + 1] = str(copy)
    args += [a for name in stages for a in ("--stage", name)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "aelab", *args], check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    record = {s["name"]: s for s in json.loads((copy / "stages.json").read_text())["stages"]}
    out = {}
    for name in stages:
        assert record[name]["status"] == "computed", record[name]
        result = json.loads((copy / record[name]["path"] / "metrics.json").read_text())
        out[name] = {"seconds": record[name]["seconds"], "rows": result.get("rows")}
    # the whole command: where a version splits a stage into others (the latent study per d), the named
    # stage's own seconds are only part of it
    out["command"] = {"seconds": wall,
                      "computed": {n: s["seconds"] for n, s in record.items() if s["status"] == "computed"}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--old", required=True, help="the earlier commit to compare with")
    ap.add_argument("--stage", action="append", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="stage-rerun-") as tmp:
        tmp = Path(tmp)
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tmp / "old"), args.old],
                       check=True, stdout=subprocess.DEVNULL)
        try:
            code = {"new": REPO / "src", "old": tmp / "old" / "src"}
            times: dict[str, dict[str, list[float]]] = {v: {s: [] for s in [*args.stage, "command"]} for v in code}
            computed: dict[str, list[dict]] = {v: [] for v in code}
            rows = {}
            for r in range(args.rounds):
                for version in (["old", "new"] if r % 2 == 0 else ["new", "old"]):
                    got = recompute(args.run, args.stage, code[version], tmp / version)
                    computed[version].append(got["command"]["computed"])
                    for name, g in got.items():
                        times[version][name].append(g["seconds"])
                        if name != "command":
                            rows.setdefault(version, {})[name] = g["rows"]
                    print(f"round {r + 1}, {version}: " + ", ".join(f"{n} {g['seconds']:.1f} s"
                                                                    for n, g in got.items()), flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "old")], check=False)
    results = {
        "environment": environment(), "run": str(args.run), "old": args.old,
        "new": subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip(),
        "rounds": args.rounds, "seconds": times, "computed": computed,
        "speedup": {s: statistics.median(o / n for o, n in zip(times["old"][s], times["new"][s], strict=True))
                    for s in [*args.stage, "command"]},
        "rows": rows,
    }
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps(results["speedup"], indent=2))


if __name__ == "__main__":
    main()
