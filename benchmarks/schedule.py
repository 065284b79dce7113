"""The study's wall under ``--jobs``, simulated for other orders of its trainings, from the stage times of a run.

    python benchmarks/schedule.py runs/zen4-byd [--jobs 2] [--alone 1.3] [--set latent-d32=105 ...]
        [--out docs/schedule-zen4.json]

The stages, their needs and the order they are planned in are ``aelab.pipeline.plan``'s for the run's own
config.toml and skips (from its run.json); each stage takes the seconds it took in the run (stages.json), or
the seconds ``--set`` gives it.  The simulation follows ``aelab.stages.run_parallel``: whenever a process is
free, the ready stages start, those that do not train first, then in planned order; a stage running alone runs
``--alone`` times faster (it takes both threads; a training scales poorly from one thread to two).  Reported:
the simulated wall of the planned order, of the order by d alone (aelab until 2026-12-07), and of every order
of the trainings that start after the warm start's sources (the best and the worst), so that a reader sees how
near the planned order is to the best one.  A simulation, not a measurement: the study's own wall is in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tomllib
from pathlib import Path

from run import _write

from aelab.config import from_dict
from aelab.pipeline import OPTIONAL_STUDIES, plan
from aelab.runs import environment


def simulate(stages: list, seconds: dict[str, float], jobs: int, alone: float) -> float:
    """Wall seconds of ``stages`` (planned order, each with .name, .needs, .resumable) under run_parallel."""
    left = {s.name: seconds[s.name] for s in stages}
    todo, running, done, t = list(stages), [], set(), 0.0
    while todo or running:
        ready = sorted((s for s in todo if all(n in done for n in s.needs)), key=lambda s: s.resumable)
        for s in ready[: jobs - len(running)]:
            running.append(s)
            todo.remove(s)
        rate = alone if len(running) == 1 else 1.0
        dt = min(left[s.name] for s in running) / rate
        t += dt
        for s in list(running):
            left[s.name] -= dt * rate
            if left[s.name] <= 1e-9:
                running.remove(s)
                done.add(s.name)
    return t


def reordered(stages: list, trainers: list) -> list:
    """``stages`` with its trainings after the sources in the order ``trainers``."""
    names = {s.name for s in trainers}
    first = next(i for i, s in enumerate(stages) if s.name in names)
    rest = [s for s in stages if s.name not in names]
    return rest[:first] + trainers + rest[first:]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path, help="a folder written by aelab reproduce (config.toml, run.json, stages.json)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--alone", type=float, default=1.3, help="how much faster a stage runs alone (both threads)")
    ap.add_argument("--set", action="append", default=[], metavar="STAGE=SECONDS",
                    help="a stage's seconds instead of the run's (e.g. one whose code changed since)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = from_dict(tomllib.loads((args.run / "config.toml").read_text()))
    command = json.loads((args.run / "run.json").read_text())["command"]
    skip = tuple(command[i + 1] for i, a in enumerate(command) if a == "--skip" and command[i + 1] in OPTIONAL_STUDIES)
    stages = plan(cfg, {}, (1, 28, 28), skip)
    seconds = {s["name"]: s["seconds"] for s in json.loads((args.run / "stages.json").read_text())["stages"]}
    seconds.update({k: float(v) for k, v in (a.split("=") for a in args.set)})
    missing = [s.name for s in stages if s.name not in seconds]
    if missing:
        raise SystemExit(f"{args.run} has no time for {', '.join(missing)}: give it with --set NAME=SECONDS")
    trainers = [s for s in stages if s.resumable]
    warm = [s for s in trainers if any(n in {t.name for t in trainers} for n in s.needs)]
    sources = [s for s in trainers if s not in warm]
    by_d = sorted(warm, key=lambda s: -int(s.name.split("-d")[1].split("-")[0]))  # stable: plan order within a d
    walls = sorted((simulate(reordered(stages, sources + list(p)), seconds, args.jobs, args.alone), [s.name for s in p])
                   for p in itertools.permutations(warm))
    result = {"environment": environment(), "run": str(args.run), "jobs": args.jobs, "alone": args.alone,
              "set": args.set, "planned": {"order": [s.name for s in trainers],
                                           "wall": simulate(stages, seconds, args.jobs, args.alone)},
              "by_d": {"order": [s.name for s in sources + by_d],
                       "wall": simulate(reordered(stages, sources + by_d), seconds, args.jobs, args.alone)},
              "orders": len(walls), "best": {"order": walls[0][1], "wall": walls[0][0]},
              "worst": {"order": walls[-1][1], "wall": walls[-1][0]}}
    _write(result, args.out)


if __name__ == "__main__":
    main()
