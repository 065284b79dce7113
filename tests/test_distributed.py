"""Beyond one process: `aelab train` under torchrun with 2 CPU processes (gloo over loopback) gives the loss
curve of one process with the same global batch, within 1e-5 relative (only the order of float sums differs)."""

import json
import os
import subprocess
import sys

import pytest

from aelab.cli import main

pytestmark = pytest.mark.xdist_group("distributed")

ARGS = ["train", "--preset", "lecture", "--dataset", "synthetic", "--n-train", "200", "--set", "model.d=4", "--epochs",
        "2", "--quiet"]


def _torchrun(args, private_cache, threads: int | None = None) -> subprocess.CompletedProcess:
    """`python -m aelab ARGS` in 2 processes under torchrun (gloo over loopback), with the test's cache."""
    import torch

    env = {**os.environ, "AELAB_CACHE": str(private_cache),
           "OMP_NUM_THREADS": str(threads or torch.get_num_threads())}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "aelab", *args], env=env, capture_output=True, text=True, timeout=300)


def _history(out):
    return json.loads((out / "metrics.json").read_text())["history"]


def test_two_processes_follow_the_single_process_loss_curve(tmp_path, private_cache):
    assert main([*ARGS, "--out", str(tmp_path / "one")]) == 0
    run = _torchrun([*ARGS, "--out", str(tmp_path / "two")], private_cache)
    assert run.returncode == 0, run.stderr[-2000:]
    one, two = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        for key in ("train_loss", "test_loss", "test_mse"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
    record = json.loads(sorted((tmp_path / "two" / "checkpoints").glob("*.json"))[-1].read_text())
    assert record["processes"] == 2
    assert run.stdout.count("test: mse") == 1  # rank 0 alone reports and writes


def test_a_batch_the_processes_cannot_share_equally_is_refused(tmp_path, private_cache):
    run = _torchrun([*ARGS, "--batch-size", "99", "--out", str(tmp_path / "x")], private_cache, threads=1)
    assert run.returncode != 0 and "train.batch_size = 99 must be a multiple of the 2 processes" in run.stderr


def test_the_stages_that_train_run_in_every_process_and_the_rest_in_rank_0(tmp_path, private_cache):
    """`aelab sweep` under torchrun: the AE stages train with DDP in both processes, the sweep stage runs in rank 0;
    the table matches a single-process run with the same global batch (only float summation order differs)."""
    args = ["sweep", "--preset", "lecture", "--dataset", "synthetic", "--n-train", "200", "--dims", "2,4", "--epochs",
            "1", "--quiet", "--set", "sweep.n_show=6"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    run = _torchrun([*args, "--out", str(tmp_path / "two")], private_cache)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("tables and figures in") == 1        # rank 0 alone reports

    def rows(out):
        stages = json.loads((out / "stages.json").read_text())["stages"]
        sweep = next(s for s in stages if s["name"] == "sweep")
        return json.loads((out / sweep["path"] / "metrics.json").read_text())["rows"]

    one, two = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert [(r["d"], r["model"]) for r in one] == [(r["d"], r["model"]) for r in two]
    for a, b in zip(one, two, strict=True):
        assert b["mse"] == pytest.approx(a["mse"], rel=1e-4)
    ckpt = next((tmp_path / "two" / "stages" / "ae-d2").glob("*/checkpoints/*.json"))
    assert json.loads(ckpt.read_text())["processes"] == 2
