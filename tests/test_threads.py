"""A stage computed beside others follows its share of the threads (``aelab.threads``, ``run_parallel``)."""

from __future__ import annotations

import functools
import multiprocessing
import time
from pathlib import Path

import torch

from aelab import threads
from aelab.stages import Result, Stage, run_parallel


def test_follow_sets_torchs_and_the_blass_threads_to_the_share_and_does_nothing_without_one():
    from threadpoolctl import threadpool_limits

    from aelab.latent import blas_threads

    before = torch.get_num_threads()
    with threadpool_limits(limits=2):  # as a worker of run_parallel starts; undone on leaving
        torch.set_num_threads(2)
        try:
            assert threads.follow() == 2  # no share: outside run_parallel
            share = multiprocessing.Value("i", 1, lock=False)
            threads.share_with(share)
            assert threads.follow() == 1 == torch.get_num_threads() == blas_threads()
            share.value = 2
            assert threads.follow() == 2 == torch.get_num_threads() == blas_threads()
            share.value = 0  # never below one thread
            assert threads.follow() == 1 == blas_threads()
        finally:
            threads.share_with(None)
            torch.set_num_threads(before)


def _worker(out: str, name: str, share: int) -> Result:
    """A stage that records the threads it may use, into out/<name>.txt: the share it started with, then its
    share every 20 ms, following it: for 1 s ("short"), or until it has had two threads for 5 looks ("long"; a
    minute at most, so that a broken share fails the test instead of hanging it)."""
    torch.set_num_threads(share)
    seen = [share]
    end = time.monotonic() + (1.0 if name == "short" else 60.0)
    while time.monotonic() < end and not (name == "long" and seen.count(2) >= 5):
        seen.append(threads.follow())
        time.sleep(0.02)
    Path(out, f"{name}.txt").write_text(" ".join(map(str, seen)))
    return Result(name, "key", Path(out), "computed", 0.0)


def test_a_stage_takes_the_threads_its_neighbour_frees(tmp_path):
    """Two stages start side by side with one thread each; when the short one ends, the long one, still
    running and with nothing else ready, gets both threads."""
    stages = [Stage(name, run=lambda ctx: {}, config={"n": i}) for i, name in enumerate(("long", "short"))]
    run_parallel(stages, tmp_path / "stages", 2, functools.partial(_worker, str(tmp_path)), threads=2,
                 echo=lambda _text: None)
    long = [int(v) for v in (tmp_path / "long.txt").read_text().split()]
    short = [int(v) for v in (tmp_path / "short.txt").read_text().split()]
    assert long[0] == 1 and set(short) == {1}  # side by side: one each
    assert long[-1] == 2 and long.index(2) > 0  # alone afterwards: both, taken while it ran
    assert long == sorted(long)  # never back to one: nothing else started


def _quick(name: str, share: int) -> Result:
    return Result(name, "key", Path("."), "computed", 0.0)


def test_of_the_ready_stages_those_that_do_not_train_start_first(tmp_path):
    """One job, a training and an analysis both ready (the training planned first): the analysis starts first, so
    that under --jobs 2 it fills a core beside the trainings instead of waiting for them all."""
    stages = [Stage("train", run=lambda ctx: {}, config={}, resumable=True),
              Stage("analysis", run=lambda ctx: {}, config={}), Stage("report", run=lambda ctx: {}, config={},
                                                                      needs=("train", "analysis"))]
    lines: list[str] = []
    run_parallel(stages, tmp_path / "stages", 1, _quick, threads=1, echo=lines.append)
    started = [line.split("]")[1].split(":")[0].strip() for line in lines if "computing" in line]
    assert started == ["analysis", "train", "report"]
