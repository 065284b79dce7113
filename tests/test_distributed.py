"""Beyond one process: `aelab train` under torchrun with 2 CPU processes (gloo over loopback) gives the loss
curve of one process with the same global batch, within 1e-5 relative (only the order of float sums differs)."""

import json
import os
import subprocess
import sys

import pytest

from aelab.cli import main

pytestmark = pytest.mark.xdist_group("distributed")

ARGS = ["train", "--dataset", "synthetic", "--n-train", "400", "--set", "model.d=4", "--epochs", "2", "--quiet"]


def _history(out):
    return json.loads((out / "metrics.json").read_text())["history"]


def test_two_processes_follow_the_single_process_loss_curve(tmp_path, private_cache):
    import torch

    assert main([*ARGS, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "AELAB_CACHE": str(private_cache), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "aelab", *ARGS, "--out", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True, timeout=300)
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
    env = {**os.environ, "AELAB_CACHE": str(private_cache), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "aelab", *ARGS, "--batch-size", "99", "--out", str(tmp_path / "x")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "train.batch_size = 99 must be a multiple of the 2 processes" in run.stderr
