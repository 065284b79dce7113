"""The training recipe: one-cycle schedule (against PyTorch's OneCycleLR), the batch rule, the precision policy,
the allocator setting (against the kernel's count of page faults)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time

import pytest
import torch

from aelab import recipe
from aelab.config import TrainConfig
from aelab.errors import ConfigError
from aelab.models import MODELS
from aelab.models.autoencoder import parse_spec
from aelab.recipe import HOPELESS, effective_lr, lr_at, measure_precision
from aelab.train import fit, training_loss


@pytest.mark.parametrize("schedule,strategy", [("onecycle", "cos"), ("onecycle-linear", "linear")])
@pytest.mark.parametrize("total,warmup", [(10, 0.3), (37, 0.3), (600, 0.3), (600, 0.05), (2400, 0.1)])
def test_one_cycle_is_pytorchs_one_cycle_lr(total, warmup, schedule, strategy):
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.Adam(params, lr=0.004)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.004, total_steps=total, cycle_momentum=False,
                                                pct_start=warmup, anneal_strategy=strategy)
    expected = []
    for _ in range(total):
        expected.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [lr_at(0.004, schedule, t, total, warmup) for t in range(total)] == pytest.approx(expected, rel=1e-12)
    assert lr_at(0.004, "constant", 5, total) == 0.004


@pytest.mark.parametrize("warmup", [0, 1, 1.5, -0.1, True, "0.3"])
def test_a_warm_up_share_outside_zero_to_one_is_refused(warmup):
    with pytest.raises(ConfigError, match=r"train\.warmup .* share of the steps in \(0, 1\)"):
        TrainConfig(warmup=warmup)


def test_the_square_root_batch_rule():
    assert effective_lr(1e-3, 400, "sqrt") == pytest.approx(2e-3)
    assert effective_lr(1e-3, 25, "sqrt") == pytest.approx(5e-4)
    assert effective_lr(1e-3, 400, "none") == 1e-3


def test_bad_recipe_settings_are_refused_naming_the_field():
    for name, value in (("schedule", "cosine"), ("lr_scaling", "linear"), ("precision", "fp16"), ("adam_beta2", 1.0),
                        ("adam_beta2", -0.1), ("adam_beta2", True)):
        with pytest.raises(ConfigError, match=f"train.{name}"):
            TrainConfig(**{name: value})


def _tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    return MODELS["ae"](4, parse_spec("8:5:1,8:4:2,8:3:2,8:4:1"))


def test_adam_beta2_is_pytorchs_adam_with_those_betas():
    x = torch.rand(150, 1, 28, 28)
    cfg = TrainConfig(epochs=1, batch_size=50, lr=3e-3, schedule="constant", lr_scaling="none", precision="fp32",
                      shuffle=False, channels_last=False, kernels="torch", adam_beta2=0.5)
    trained = _tiny_model()
    fit(trained, x, x[:50], cfg, progress=False)
    by_hand = _tiny_model()
    opt = torch.optim.Adam(by_hand.parameters(), lr=3e-3, betas=(0.9, 0.5))
    for batch in x.split(50):  # the slide's fixed order
        loss = training_loss(by_hand, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    default = _tiny_model()
    fit(default, x, x[:50], dataclasses.replace(cfg, adam_beta2=0.999), progress=False)
    for p, q in zip(trained.parameters(), by_hand.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert any(not torch.allclose(p, r) for p, r in zip(trained.parameters(), default.parameters(), strict=True))


def test_the_precision_measurement_changes_nothing_and_says_why():
    model = _tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(16, 1, 28, 28)
    rng = torch.get_rng_state()
    choice = measure_precision(model, training_loss, x, torch.device("cpu"), steps=2)
    assert choice["precision"] in ("fp32", "bf16") and set(choice["seconds_per_step"]) == {"fp32", "bf16"}
    assert ("faster" in choice["reason"] or "speed" in choice["reason"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.get_rng_state())


def test_the_precision_measurement_pairs_its_steps_so_a_drift_does_not_decide():
    """A fake step that takes 40 ms in fp32 and 20 ms under bf16 autocast (bf16 truly 2x), on a 'CPU' that turns 3x
    slower from the 8th call on: timed in two blocks, bf16 would look 0.67x and lose; paired steps see 2x.  Tens
    of milliseconds, so that a busy machine's scheduling delays (a few ms) cannot decide either."""
    weight = torch.nn.Parameter(torch.ones(1))
    calls = []

    def loss_fn(_model, _x):
        calls.append(1)
        bf16 = torch.is_autocast_enabled("cpu")
        time.sleep((0.020 if bf16 else 0.040) * (3 if len(calls) >= 8 else 1))
        return weight.sum() * 0

    choice = measure_precision(torch.nn.Linear(1, 1), loss_fn, torch.zeros(1), torch.device("cpu"), steps=5)
    assert len(calls) == 12  # one warm-up each, then five pairs
    assert choice["precision"] == "bf16" and choice["speedup"] == pytest.approx(2.0, rel=0.25)


def test_the_precision_measurement_stops_after_two_pairs_where_bf16_is_far_slower():
    """bf16 emulated, 5x slower than fp32 (100 ms against 20 ms): one warm-up each and two pairs decide (0.2x <
    0.575x in both), not five.  A busy machine delays a sleep by some milliseconds (with 10 / 50 ms sleeps the
    ratio read 0.29 in a fresh-clone run beside the other tests), so it is checked against the threshold that
    decides."""
    weight = torch.nn.Parameter(torch.ones(1))
    calls = []

    def loss_fn(_model, _x):
        calls.append(torch.is_autocast_enabled("cpu"))
        time.sleep(0.100 if torch.is_autocast_enabled("cpu") else 0.020)
        return weight.sum() * 0

    choice = measure_precision(torch.nn.Linear(1, 1), loss_fn, torch.zeros(1), torch.device("cpu"), steps=5)
    assert calls == [False, True, False, True, True, False]  # the second pair in the other order
    assert choice["precision"] == "fp32" and 0.15 < choice["speedup"] < HOPELESS
    assert "two paired steps" in choice["reason"]


def test_one_bf16_step_slowed_by_another_process_does_not_end_the_measurement():
    """bf16 truly 2x (20 ms against 40 ms), but the first timed bf16 step is 10x slower, as when another process
    takes the core for a moment: the first pair reads 0.2x, below the threshold that stops the measurement;
    the second pair does not, so all five pairs are taken and their median chooses bf16."""
    weight = torch.nn.Parameter(torch.ones(1))
    calls = []

    def loss_fn(_model, _x):
        bf16 = torch.is_autocast_enabled("cpu")
        calls.append(bf16)
        slowed = bf16 and calls.count(True) == 2  # the first bf16 step after its warm-up
        time.sleep((0.020 if bf16 else 0.040) * (10 if slowed else 1))
        return weight.sum() * 0

    choice = measure_precision(torch.nn.Linear(1, 1), loss_fn, torch.zeros(1), torch.device("cpu"), steps=5)
    assert len(calls) == 12
    assert choice["precision"] == "bf16" and choice["speedup"] == pytest.approx(2.0, rel=0.25)


def _cpu_flags() -> set[str]:
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(platform.machine() != "x86_64" or not os.path.exists("/proc/cpuinfo"),
                    reason="the kernel's CPU flags of an x86-64 Linux are the independent truth here")
def test_native_bf16_agrees_with_the_kernels_cpu_flags():
    flags = _cpu_flags()
    assert recipe.native_bf16(torch.device("cpu")) is bool(flags & {"avx512_bf16", "amx_bf16"})
    assert recipe.native_bf16(torch.device("cuda")) is None  # a GPU is measured, never guessed


def test_auto_precision_on_a_cpu_without_native_bf16_is_fp32_without_measuring(tmp_path, monkeypatch):
    def no_measuring(*_args, **_kwargs):
        raise AssertionError("a CPU known to lack native bf16 is not measured")
    monkeypatch.setattr(recipe, "native_bf16", lambda _device: False)
    monkeypatch.setattr(recipe, "measure_precision", no_measuring)
    x = torch.rand(100, 1, 28, 28)
    h = fit(_tiny_model(), x, x[:50], TrainConfig(epochs=1, batch_size=50, precision="auto"), tmp_path,
            progress=False)
    assert h.precision["precision"] == "fp32" and "no native bf16" in h.precision["reason"]
    run = json.loads(sorted((tmp_path / "checkpoints").glob("epoch-*.json"))[-1].read_text())
    assert run["precision"] == h.precision


def test_bf16_autocast_trains_close_to_fp32():
    x = torch.rand(200, 1, 28, 28)
    cfg = TrainConfig(epochs=2, batch_size=50, lr=3e-3, channels_last=False)
    losses = {}
    for precision in ("fp32", "bf16"):
        h = fit(_tiny_model(), x, x[:50], dataclasses.replace(cfg, precision=precision), progress=False)
        assert h.precision["precision"] == precision
        losses[precision] = h.last["test_mse"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


def test_one_cycle_resumes_bit_for_bit_and_refuses_another_length(tmp_path):
    x = torch.rand(300, 1, 28, 28)
    cfg = TrainConfig(epochs=3, batch_size=50, lr=3e-3, schedule="onecycle", lr_scaling="sqrt",
                      precision="auto", channels_last=False, kernels="torch")  # (kernels: as the test above)
    part = _tiny_model()
    measured = fit(part, x, x[:50], cfg, tmp_path / "b", progress=False).precision
    # the straight run to compare with trains in the precision that run measured: on a CPU with native bf16 a
    # model this small sits near the threshold, and two measurements may choose differently
    whole = _tiny_model()
    fit(whole, x, x[:50], cfg, tmp_path / "a", progress=False, precision=measured)
    # cut the run at epoch 1: keep only its first checkpoint, then resume to 3 (keeping its measured precision)
    for f in (tmp_path / "b" / "checkpoints").glob("epoch-000[23].*"):
        f.unlink()
    resumed = _tiny_model(seed=99)
    fit(resumed, x, x[:50], cfg, tmp_path / "b", resume=True, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(),
                                                 strict=True))
    rec = json.loads(sorted((tmp_path / "b" / "checkpoints").glob("epoch-*.json"))[-1].read_text())
    assert rec["precision"] == measured
    with pytest.raises(ConfigError, match="train.epochs 3 -> 5"):
        fit(_tiny_model(), x, x[:50], dataclasses.replace(cfg, epochs=5), tmp_path / "b", resume=True,
            progress=False)


# A training step's heap in miniature: six 8 MiB buffers alive at once, then all freed; the kernel counts the
# fresh pages the process touches (minor page faults) over 20 such steps after 3 of warm-up.
HEAP_PROBE = """
import json, resource, torch
from aelab.recipe import keep_freed_memory
state = keep_freed_memory()
def step():
    bufs = [torch.ones(2 << 20) for _ in range(6)]
    del bufs
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(json.dumps({"state": state, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20}))
"""


def _heap_probe(**env: str) -> dict:
    """HEAP_PROBE in a fresh interpreter (the allocator setting is process-wide) with ``env`` added."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "AELAB_ALLOCATOR"))}
    out = subprocess.run([sys.executable, "-c", HEAP_PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_memory_is_kept_for_the_next_step_and_the_user_can_say_no():
    kept = _heap_probe()
    assert kept["state"]["allocator"] == "glibc, freed memory kept"
    assert kept["faults"] < 20  # of 12288 pages (48 MiB) touched per step: reused, not taken from the kernel again
    # glibc's own adaptive thresholds hand the pages back in some processes and not in others (they depend on
    # the order of earlier allocations), so the opt-out is checked on what it records, not on its faults
    unchanged = _heap_probe(AELAB_ALLOCATOR="system")
    assert unchanged["state"] == {"allocator": "system, unchanged", "reason": "AELAB_ALLOCATOR=system"}
    # a user's own malloc setting is left alone: here one that returns every freed page, which also shows that
    # the probe sees the faults it would count if the memory were not kept
    theirs = _heap_probe(MALLOC_TRIM_THRESHOLD_="0")
    assert theirs["state"]["allocator"] == "system, unchanged" and "MALLOC_" in theirs["state"]["reason"]
    assert theirs["faults"] > 1000


def test_a_run_records_what_it_did_with_the_allocator(tmp_path):
    x = torch.rand(100, 1, 28, 28)
    h = fit(_tiny_model(), x, x[:50], TrainConfig(epochs=1, batch_size=50, precision="fp32"), tmp_path,
            progress=False)
    assert h.allocator["allocator"] in ("glibc, freed memory kept", "system, unchanged")
    rec = json.loads(sorted((tmp_path / "checkpoints").glob("epoch-*.json"))[-1].read_text())
    assert rec["allocator"] == h.allocator


def test_a_given_precision_choice_is_used_without_measuring_and_kept_on_resume(tmp_path, monkeypatch):
    x = torch.rand(200, 1, 28, 28)
    # PyTorch's kernels: each run's own measurement (aelab.kernels) could keep other layers in fp32
    cfg = TrainConfig(epochs=2, batch_size=50, lr=3e-3, schedule="onecycle", precision="auto", channels_last=False,
                      kernels="torch")
    choice = {"precision": "bf16", "reason": "given"}
    seen = set()

    def no_measuring(*_args, **_kwargs):
        raise AssertionError("a given or recorded precision choice is not measured again")
    monkeypatch.setattr(recipe, "measure_precision", no_measuring)
    whole = _tiny_model()
    # the output dtype of the first decoder layer in training steps (the per-epoch evaluations run in fp32)
    hook = whole.decoder[0].register_forward_hook(
        lambda _m, _i, out: seen.add(out.dtype) if torch.is_autocast_enabled("cpu") else None)
    h = fit(whole, x, x[:50], cfg, tmp_path / "a", progress=False, precision=choice)
    hook.remove()
    assert h.precision == choice and seen == {torch.bfloat16}
    part = _tiny_model()
    fit(part, x, x[:50], cfg, tmp_path / "b", progress=False, precision=choice)
    for f in (tmp_path / "b" / "checkpoints").glob("epoch-0002.*"):
        f.unlink()
    resumed = _tiny_model(seed=99)
    h = fit(resumed, x, x[:50], cfg, tmp_path / "b", resume=True, progress=False)
    assert h.precision == choice
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(),
                                                 strict=True))
    with pytest.raises(ConfigError, match="fp32 or bf16"):
        fit(_tiny_model(), x, x[:50], cfg, progress=False, precision={"precision": "fp16"})
