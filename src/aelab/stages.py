"""Named, cached stages: a stage's output is stored under a key of what it read, so nothing stale is reused.

    key = sha256(stage name + stage version + aelab version + the config slice it reads + the keys of the
                 stages it needs)
    out = <store>/<name>/<key[:16]>/                      (complete: holds stage.json)
          <store>/<name>/<key[:16]>.partial/              (being computed; kept when interrupted)

The data stage's config slice holds the data's content hashes, and every other stage needs it directly or
through another stage, so a change of data, of a setting or of a stage's code changes exactly the keys that
depend on it.  A stage writes into its ``.partial`` folder and the folder is renamed into place when the
stage finishes (the commit); a stage marked ``resumable`` (training) finds its checkpoints there after an
interruption and continues at its epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aelab import AelabError, __version__
from aelab.io import atomic_write_json


@dataclass
class Context:
    """What a running stage gets: its output folder, the folders of the stages it needs, shared memory."""

    out: Path
    inputs: dict[str, Path]
    progress: bool = True
    memo: dict[str, Any] = field(default_factory=dict)  # loaded data and models shared within one process


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Context], dict]     # writes into ctx.out; returns the stage's metrics (JSON-able)
    config: dict[str, Any]             # the slice of the configuration the stage reads
    needs: tuple[str, ...] = ()
    version: int = 1                   # bump when the stage's code changes what it writes
    resumable: bool = False            # keep the partial folder after an interruption (training)
    collective: bool = False           # under torchrun every process runs it (training); else rank 0 alone


@dataclass(frozen=True)
class Result:
    name: str
    key: str
    path: Path
    status: str                        # "computed" or "reused"
    seconds: float


def stage_key(stage: Stage, need_keys: dict[str, str]) -> str:
    blob = json.dumps({"name": stage.name, "version": stage.version, "aelab": __version__, "config": stage.config,
                       "needs": {n: need_keys[n] for n in stage.needs}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def keys(stages: list[Stage]) -> dict[str, str]:
    """The key of every stage, in order (a stage's needs must come before it)."""
    out: dict[str, str] = {}
    for s in stages:
        missing = [n for n in s.needs if n not in out]
        if missing:
            raise AelabError(f"stage {s.name} needs {', '.join(missing)}, which is not planned before it")
        if s.name in out:
            raise AelabError(f"stage {s.name} is planned twice")
        out[s.name] = stage_key(s, out)
    return out


def stage_dir(store: Path, name: str, key: str) -> Path:
    return store / name / key[:16]


def partial_dir(final: Path) -> Path:
    """Where a stage whose folder will be ``final`` is being computed (kept after an interruption if resumable)."""
    return final.with_name(final.name + ".partial")


def is_complete(path: Path) -> bool:
    return (path / "stage.json").exists()


def run_stages(stages: list[Stage], store: str | Path, *, progress: bool = True,
               echo: Callable[[str], None] = print, memo: dict[str, Any] | None = None,
               computed: dict[str, Result] | None = None) -> list[Result]:
    """Run every stage whose output is not complete in ``store``, reuse the rest; returns one Result each.

    computed: the Results of stages that ``run_parallel`` has just computed (complete now, but reported as
    computed, with their own seconds, not as reused).

    Under torchrun (``aelab.distributed``) every process walks the same plan: a ``collective`` stage (training)
    runs in all of them, any other in rank 0 alone; rank 0 alone writes and commits, and every process waits
    for the commit before the next stage."""
    from aelab import distributed

    store = Path(store)
    all_keys = keys(stages)
    paths = {s.name: stage_dir(store, s.name, all_keys[s.name]) for s in stages}
    memo = {} if memo is None else memo
    computed = computed or {}
    main = distributed.is_main()
    echo = echo if main else (lambda _text: None)
    results = []
    for i, s in enumerate(stages, 1):
        final = paths[s.name]
        distributed.barrier()  # rank 0's last commit is visible to all before anyone looks
        if s.name in computed and is_complete(final):  # run_parallel said so as it happened
            results.append(computed[s.name])
            continue
        if is_complete(final):
            seconds = json.loads((final / "stage.json").read_text()).get("seconds", 0.0)
            echo(f"[{i}/{len(stages)}] {s.name}: reused ({final})")
            results.append(Result(s.name, all_keys[s.name], final, "reused", seconds))
            continue
        partial = partial_dir(final)
        if main:
            if partial.exists() and not s.resumable:
                shutil.rmtree(partial)
            resumed = partial.exists()
            partial.mkdir(parents=True, exist_ok=True)
            echo(f"[{i}/{len(stages)}] {s.name}: {'resuming' if resumed else 'computing'} -> {final}")
        distributed.barrier()
        t0 = time.perf_counter()
        if not main:
            if s.collective:
                s.run(Context(partial, {n: paths[n] for n in s.needs}, False, memo))
            results.append(Result(s.name, all_keys[s.name], final, "computed", time.perf_counter() - t0))
            continue
        metrics = s.run(Context(partial, {n: paths[n] for n in s.needs}, progress, memo))
        seconds = time.perf_counter() - t0
        atomic_write_json(partial / "metrics.json", metrics)
        atomic_write_json(partial / "stage.json", {"name": s.name, "key": all_keys[s.name], "config": s.config,
                                                   "needs": {n: all_keys[n] for n in s.needs},
                                                   "version": s.version, "seconds": seconds})
        if final.exists():  # an incomplete leftover without stage.json: replace it
            shutil.rmtree(final)
        os.replace(partial, final)
        echo(f"[{i}/{len(stages)}] {s.name}: done in {seconds:.1f} s")
        results.append(Result(s.name, all_keys[s.name], final, "computed", seconds))
    distributed.barrier()
    return results


def run_parallel(stages: list[Stage], store: str | Path, jobs: int, worker: Callable[[str, int], Result], *,
                 threads: int, echo: Callable[[str], None] = print) -> dict[str, Result]:
    """Compute the incomplete stages of ``stages`` in up to ``jobs`` processes at once, each one as soon as the
    stages it needs are complete; returns the Result of every stage computed.

    worker(name, threads): a picklable function that runs in a fresh (spawned) process, plans again and computes
    the stage ``name`` with ``threads`` torch threads (``run_stages`` of it and its needs, which are complete by
    then).  Of the ready stages, those that do not train start first.  While several stages are ready each gets
    ``threads // jobs``; a stage that starts alone gets them all.
    Each stage still commits by renaming its own folder, so an interruption loses no finished stage, and a
    training stage resumes from its checkpoints.  When a stage fails, no new one starts; the running ones finish
    (their work is kept) and the first error is raised.

    Why processes: on a CPU the lecture's small convolutions scale poorly from one thread to two, so two
    single-threaded trainings side by side train more samples per second than one with two threads
    (docs/benchmarks.md, "The whole study on 2 CPU cores").  A stage's threads follow its share while it runs
    (``aelab.threads``): when its neighbour ends and no stage is ready to take its place, a training takes the
    freed threads at its next loss check."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    store = Path(store)
    all_keys = keys(stages)
    todo = {s.name: s for s in stages if not is_complete(stage_dir(store, s.name, all_keys[s.name]))}
    label = {s.name: f"[{i}/{len(stages)}] {s.name}" for i, s in enumerate(stages, 1)}
    running: dict[Any, str] = {}
    done: dict[str, Result] = {}
    failure: BaseException | None = None
    ctx = multiprocessing.get_context("spawn")
    share_now = ctx.Value("i", threads, lock=False)  # the threads each running stage may use now
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_start,
                             initargs=(share_now, os.getpid())) as pool:
        for _ in range(min(jobs, len(todo))):  # start the processes together (a few seconds of imports each)
            pool.submit(_started, worker)
        while running or (todo and failure is None):
            if failure is None:
                ready = [s for s in todo.values() if not any(n in todo or n in running.values() for n in s.needs)]
                # the stages that train (resumable) after the others: a stage that reads trained models then fills
                # a core beside the trainings as soon as its models exist, instead of waiting for them all and
                # running alone at the end (in docs/benchmarks.md's study of 998 s, latent-d32 waited 577 s for
                # its turn and ran its last 48 s alone: "The study's models warm-started")
                ready.sort(key=lambda s: s.resumable)
                share = max(1, threads // max(1, min(jobs, len(running) + len(ready))))
                for s in ready[: jobs - len(running)]:
                    final = stage_dir(store, s.name, all_keys[s.name])
                    resuming = s.resumable and partial_dir(final).exists()
                    echo(f"{label[s.name]}: {'resuming' if resuming else 'computing'} in a worker process "
                         f"({share} thread(s)) -> {final}")
                    running[pool.submit(worker, s.name, share)] = s.name
                    del todo[s.name]
                share_now.value = share  # the running ones' share too: a stage left alone takes every thread
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                name = running.pop(future)
                try:
                    done[name] = future.result()
                    echo(f"{label[name]}: done in {done[name].seconds:.1f} s")
                except BaseException as e:  # noqa: BLE001 - re-raised below, once the running stages end
                    failure = failure or e
    if failure is not None:
        raise failure
    return done


def _worker_start(share, parent: int) -> None:
    """A worker process's initializer: it follows ``share`` of the threads (``aelab.threads``), and it ends with
    the run, however the run ends.  Ctrl-C reaches the whole process group, but a run killed alone (``kill PID``,
    a scheduler's time limit, the kernel's out-of-memory killer) would leave its workers training on: a rerun
    would then start a second writer into the same ``.partial`` folder once the run's lock was gone with it.
    On Linux the kernel sends the worker SIGTERM when the run's process ends (PR_SET_PDEATHSIG); elsewhere the
    worker checks nothing more than that the run was still there when it started."""
    from aelab import threads

    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # the run ended before the request above was made: nothing would signal us
        os._exit(1)
    threads.share_with(share)


def _started(_worker: Callable) -> None:
    """Nothing: a worker process that unpickled this call has imported the worker's module (torch with it)."""


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
