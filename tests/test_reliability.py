"""Reliability: honest resume, crash safety proven by SIGKILL, one writer per run folder, no global RNG
side effects, and densities whose samples match the fitted parameters (an independent check)."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aelab.cli import main
from aelab.config import ModelConfig, lecture_train
from aelab.errors import ConfigError

pytestmark = pytest.mark.xdist_group("reliability")


def _train_args(out, kind="ae", epochs=3, extra=()):
    # 4 steps an epoch (200 images, batch 50); the layers' kernels measured ("auto"), once for the machine
    # (aelab.timings, in the session's private cache): the runs compared take the same measurement, so compute alike
    return ["train", "--preset", "lecture", "--dataset", "synthetic", "--n-train", "200", "--batch-size", "50",
            "--model", kind, "--d", "4", "--epochs", str(epochs), "--out", str(out), "--quiet", *extra]


def _final_weights(out):
    meta = sorted((out / "checkpoints").glob("epoch-*.json"))[-1]
    return load_file(str(meta.with_suffix(".safetensors")))


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# A child process that trains and SIGKILLs itself at a chosen point: mid-epoch (inside a training step)
# or mid-checkpoint-write (half of the weights file written, before the atomic rename).
KILLER = textwrap.dedent("""
    import os, signal, sys
    import torch
    import aelab.train as t
    where, epoch = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(int(sys.argv[3]))  # the parent's: float sums depend on the thread count
    if where == "step":
        real_loss, state = t.training_loss, {"calls": 0}
        def loss(model, x):
            state["calls"] += 1
            if state["calls"] == epoch * 4 + 2:   # 4 steps per epoch (200 images, batch 50): inside epoch+1
                os.kill(os.getpid(), signal.SIGKILL)
            return real_loss(model, x)
        t.training_loss = loss
    else:
        real_save = t.save_file
        def save(tensors, path):
            if f"epoch-{epoch:04d}" in str(path) or (".epoch-%04d" % epoch) in str(path):
                real_save(tensors, path)
                with open(path, "r+b") as f:               # a half-written file, then the process dies
                    f.truncate(os.path.getsize(path) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(tensors, path)
        t.save_file = save
    from aelab.cli import main
    sys.exit(main(sys.argv[4:]))
""")


# a kill inside a step, for both models (the VAE's resume must also restore its sampling noise), and inside a
# checkpoint write, which is the same code for any model
@pytest.mark.parametrize(("where", "kind"), [("step", "ae"), ("step", "vae"), ("checkpoint", "ae")])
def test_sigkill_then_resume_gives_bit_identical_weights(tmp_path, kind, where, private_cache):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(_train_args(straight, kind)) == 0
    env = {**os.environ, "AELAB_CACHE": str(private_cache)}
    child = subprocess.run([sys.executable, "-c", KILLER, where, "2", str(torch.get_num_threads()),
                            *_train_args(killed, kind)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    finished = sorted(p.name for p in (killed / "checkpoints").glob("epoch-*.json"))
    assert finished == (["epoch-0001.json", "epoch-0002.json"] if where == "step" else ["epoch-0001.json"])
    kept = json.loads((killed / "checkpoints" / finished[-1]).read_text())["history"]
    assert main([*_train_args(killed, kind), "--resume"]) == 0
    assert _same(_final_weights(straight), _final_weights(killed))
    history = json.loads((killed / "metrics.json").read_text())["history"]
    assert [e["epoch"] for e in history] == [1, 2, 3]
    assert history[: len(kept)] == kept  # finished epochs were kept, not trained again: no work lost


def test_damaged_newest_checkpoint_is_named_and_the_run_continues_from_the_newest_intact(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(out, epochs=2)) == 0
    (out / "checkpoints" / "epoch-0002.json").write_text('{"epoch": 2, "weigh')   # truncated record
    capsys.readouterr()
    assert main([*_train_args(out, epochs=2), "--resume"]) == 0
    err = capsys.readouterr().err
    assert "epoch-0002.json" in err and "continuing from" in err and "epoch-0001.json" in err
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [e["epoch"] for e in history] == [1, 2]   # epoch 2 trained again, epoch 1 kept


def test_a_pickle_where_a_checkpoint_should_be_is_refused_not_executed(tmp_path, capsys):
    import pickle

    out = tmp_path / "run"
    assert main(_train_args(out, epochs=1)) == 0
    weights = out / "checkpoints" / "epoch-0001.safetensors"
    marker = tmp_path / "executed"
    weights.write_bytes(pickle.dumps(Boom(str(marker))))
    meta = out / "checkpoints" / "epoch-0001.json"
    rec = json.loads(meta.read_text())
    from aelab.io import sha256_file

    rec["sha256"] = sha256_file(weights)   # a record made to match: the content must still be refused
    meta.write_text(json.dumps(rec))
    capsys.readouterr()
    assert main(["interpolate", "--run", str(out), "--out", str(tmp_path / "i.png")]) == 2
    err = capsys.readouterr().err
    assert "not a readable safetensors file" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


class Boom:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_resume_with_other_settings_is_refused_naming_them_unless_allowed(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(out, epochs=1)) == 0
    capsys.readouterr()
    assert main([*_train_args(out, epochs=2, extra=["--lr", "0.003", "--seed", "4"]), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "train.lr 0.001 -> 0.003" in err and "train.seed 0 -> 4" in err and "--allow-change" in err
    assert main([*_train_args(out, epochs=2, extra=["--d", "6"]), "--resume"]) == 2
    assert "another model" in capsys.readouterr().err
    assert main([*_train_args(out, epochs=2, extra=["--lr", "0.003"]), "--resume",
                 "--allow-change", "train.lr"]) == 0
    rec = json.loads((out / "checkpoints" / "epoch-0002.json").read_text())
    assert rec["optimizer"]["param_groups"][0]["lr"] == 0.003 and rec["train_config"]["lr"] == 0.003
    assert main([*_train_args(out, epochs=1, extra=["--lr", "0.003"]), "--resume"]) == 2  # fewer epochs
    assert "already has 2 epochs" in capsys.readouterr().err


def test_one_writer_per_run_folder_and_stale_locks_are_taken_over(tmp_path, capsys):
    from aelab.runs import RunLock

    out = tmp_path / "run"
    with RunLock(out):
        assert main(_train_args(out, epochs=1)) == 2
        err = capsys.readouterr().err
        assert "in use by another aelab run" in err and f"pid {os.getpid()}" in err
        assert not (out / "checkpoints").exists()
    # a lock file left by a dead process (no kernel lock held): taken over, and said so
    (out / ".aelab.lock").write_text(json.dumps({"pid": 999999, "host": "h", "since": "t", "command": "aelab x"}))
    assert main(_train_args(out, epochs=1)) == 0
    assert "taking over the lock" in capsys.readouterr().err


def test_a_second_process_on_the_same_folder_is_refused(tmp_path, private_cache):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from aelab.runs import RunLock
        with RunLock({str(out)!r}):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        env = {**os.environ, "AELAB_CACHE": str(private_cache)}
        second = subprocess.run([sys.executable, "-m", "aelab", *_train_args(out, epochs=1)], env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and f"pid {holder.pid}" in second.stderr
    finally:
        holder.kill()
        holder.wait()


def test_library_functions_leave_the_global_rng_alone(mnist_train):
    from aelab.experiments import build_model
    from aelab.latent import Flow
    from aelab.train import fit

    x = torch.rand(200, 1, 28, 28)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    model = build_model(ModelConfig("vae", 4), (1, 28, 28), seed=0)
    fit(model, x, x[:50], lecture_train(epochs=1), progress=False)
    Flow(steps=5).fit(np.random.default_rng(0).standard_normal((100, 2)))
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("name", ["diag", "full", "gmm", "flow"])
def test_density_samples_have_the_moments_of_the_fitted_data(name):
    """An independent truth: samples drawn from a density fitted on data must reproduce that data's mean and
    covariance (a diagonal Gaussian drawing with the variance instead of the standard deviation fails)."""
    from aelab.latent import make_density

    rng = np.random.default_rng(0)
    a = np.array([[2.0, 0.0, 0.0], [1.2, 0.5, 0.0], [0.0, -0.4, 3.0]])
    z = rng.standard_normal((20000, 3)) @ a.T + np.array([1.0, -2.0, 0.5])
    options = {"n_components": 1} if name == "gmm" else ({"steps": 600} if name == "flow" else {})
    samples = make_density(name, seed=1, **options).fit(z).sample(20000, seed=2)
    assert np.allclose(samples.mean(0), z.mean(0), atol=0.1)
    cov_s, cov_z = np.cov(samples, rowvar=False), np.cov(z, rowvar=False)
    if name == "diag":  # only the variances are modelled
        assert np.allclose(np.diag(cov_s), np.diag(cov_z), rtol=0.05)
        assert np.allclose(cov_s - np.diag(np.diag(cov_s)), 0, atol=0.15)
    else:
        assert np.allclose(cov_s, cov_z, rtol=0.1, atol=0.15)


def test_the_vae_prior_is_a_standard_normal():
    from aelab.latent import make_density

    s = make_density("prior").fit(np.zeros((1, 4))).sample(20000, seed=0)
    assert np.allclose(s.mean(0), 0, atol=0.03) and np.allclose(np.cov(s, rowvar=False), np.eye(4), atol=0.04)


def test_resume_in_the_library_refuses_a_different_config(tmp_path):
    from aelab.train import fit

    x = torch.rand(100, 1, 28, 28)
    from aelab.models import AutoEncoder

    fit(AutoEncoder(4), x, x[:20], lecture_train(epochs=1, batch_size=50), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="train.batch_size 50 -> 20"):
        fit(AutoEncoder(4), x, x[:20], lecture_train(epochs=2, batch_size=20), tmp_path, resume=True, progress=False)
