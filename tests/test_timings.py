"""aelab.timings: a measurement made once per machine and kept, so that choices made by timing stay made."""

import json
import os
import platform
import warnings

import pytest
import torch

from aelab import kernels, recipe, timings
from aelab.models import AutoEncoder


def _counting(values):
    calls = []

    def measure():
        calls.append(1)
        return values[len(calls) - 1]
    return measure, calls


def test_a_measurement_is_made_once_and_read_back_by_a_new_process(own_timings, monkeypatch):
    measure, calls = _counting([1.15, 1.05])
    assert timings.kept("apart | layer", measure) == 1.15
    assert timings.kept("apart | layer", measure) == 1.15 and len(calls) == 1  # this process: from memory
    monkeypatch.setattr(timings, "_SEEN", {})  # another process: from the file
    assert timings.kept("apart | layer", measure) == 1.15 and len(calls) == 1
    kept = json.loads(own_timings.read_text())
    assert kept["machine"] == timings.machine() and kept["timings"]["apart | layer"]["value"] == 1.15
    assert timings.kept("apart | other layer", measure) == 1.05 and len(calls) == 2
    assert set(json.loads(own_timings.read_text())["timings"]) == {"apart | layer", "apart | other layer"}


def test_processes_measuring_at_once_agree_on_the_first_value_written(own_timings, monkeypatch):
    """While this process measures, another writes its own value for the key: this one takes that value (and
    keeps the file as the other wrote it), so both processes choose alike."""
    def measure_while_another_writes():
        other = {"machine": timings.machine(), "timings": {"k": {"value": 2.0, "measured": "then"}}}
        own_timings.parent.mkdir(parents=True, exist_ok=True)
        own_timings.write_text(json.dumps(other))
        return 1.0
    assert timings.kept("k", measure_while_another_writes) == 2.0
    assert json.loads(own_timings.read_text())["timings"]["k"] == {"value": 2.0, "measured": "then"}


def test_fresh_measures_in_each_process_and_keeps_nothing_on_disk(own_timings, monkeypatch):
    monkeypatch.setenv(timings.ENV, "fresh")
    measure, calls = _counting([1.2, 0.9])
    assert timings.kept("taps | x", measure) == 1.2 and timings.kept("taps | x", measure) == 1.2
    assert timings.seen("taps") == {"taps | x": 1.2} and not own_timings.exists()
    monkeypatch.setattr(timings, "_SEEN", {})
    assert timings.kept("taps | x", measure) == 0.9 and len(calls) == 2


@pytest.mark.parametrize("damage", ["{not json", json.dumps([1, 2]), json.dumps({"timings": 3})])
def test_an_unreadable_file_is_measured_again_and_rewritten(own_timings, damage):
    own_timings.parent.mkdir(parents=True, exist_ok=True)
    own_timings.write_text(damage)
    with pytest.warns(UserWarning, match="unreadable.*measuring again"):
        assert timings.kept("k", lambda: 3.5) == 3.5
    assert json.loads(own_timings.read_text())["timings"]["k"]["value"] == 3.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        timings._SEEN.clear()
        assert timings.kept("k", lambda: pytest.fail("measured again")) == 3.5


def test_another_cpu_torch_or_code_reads_another_file(monkeypatch, tmp_path):
    monkeypatch.setenv("AELAB_CACHE", str(tmp_path))
    here = timings.path()
    assert here.parent == tmp_path / "timings"
    described = timings.machine()
    monkeypatch.setattr(timings, "machine", lambda: {**described, "flags": "sse2"})
    assert timings.path() != here
    monkeypatch.setattr(timings, "machine", lambda: {**described, "torch": "0.0"})
    assert timings.path() != here
    monkeypatch.setattr(timings, "machine", lambda: described)
    assert timings.path() == here
    monkeypatch.setattr(timings, "_TIMED_MODULES", ("kernels.py",))  # as if recipe.py's code were other
    assert timings.path() != here


@pytest.mark.skipif(platform.system() != "Linux" or not os.path.exists("/proc/cpuinfo"),
                    reason="/proc/cpuinfo is the independent truth here")
def test_the_machine_is_described_by_its_first_processor_in_proc_cpuinfo():
    first = open("/proc/cpuinfo").read().split("\n\n")[0]
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}
    described = timings.machine()
    assert described["torch"] == torch.__version__ and described["machine"] == platform.machine()
    for name in ("model name", "flags"):
        if name in fields:
            assert described[name] == fields[name]


def _fit(tmp_path, name, **train):
    from aelab.config import lecture_train
    from aelab.train import fit

    torch.manual_seed(0)
    model = AutoEncoder(8)
    g = torch.Generator().manual_seed(1)
    train_x, test_x = torch.rand(200, 1, 28, 28, generator=g), torch.rand(50, 1, 28, 28, generator=g)
    cfg = lecture_train(**{"epochs": 1, "batch_size": 50, **train})
    return model, fit(model, train_x, test_x, cfg, tmp_path / name, progress=False)


def test_two_runs_of_one_seed_train_the_same_weights_however_the_timing_falls(tmp_path, monkeypatch, own_timings):
    """The bias apart measured just over the threshold in the first run and just under it afterwards: the second
    run, a new process, takes the first one's measurement, and so its choice and its weights to the bit; measured
    afresh it would have chosen otherwise."""
    calls = []
    monkeypatch.setattr(kernels, "bias_apart_speedup",
                        lambda *a: 1.15 if calls.append(1) or len(calls) <= 4 else 1.05)
    model_a, a = _fit(tmp_path, "a", precision="fp32")
    assert a.kernels["bias_apart"] == ["decoder.0", "decoder.2", "decoder.4", "decoder.6"] and len(calls) == 4
    monkeypatch.setattr(timings, "_SEEN", {})  # a new process
    model_b, b = _fit(tmp_path, "b", precision="fp32")
    assert len(calls) == 4 and b.kernels == a.kernels
    for (name, p), q in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    monkeypatch.setenv(timings.ENV, "fresh")
    _, c = _fit(tmp_path, "c", precision="fp32")
    assert len(calls) == 8 and c.kernels["bias_apart"] == []


def test_the_precision_is_measured_once_per_machine(tmp_path, monkeypatch, own_timings):
    monkeypatch.setattr(recipe, "native_bf16", lambda _device: None)  # measured, whatever this CPU is
    choice = {"precision": "fp32", "speedup": 1.01, "batch": 50, "reason": "measured (test)"}
    measured = []
    monkeypatch.setattr(recipe, "measure_precision", lambda model, loss_fn, x, device: measured.append(x) or choice)
    _, a = _fit(tmp_path, "a", precision="auto", kernels="torch")
    monkeypatch.setattr(timings, "_SEEN", {})  # a new process
    _, b = _fit(tmp_path, "b", precision="auto", kernels="torch")
    assert a.precision == b.precision == choice and len(measured) == 1
    _fit(tmp_path, "c", precision="auto", kernels="torch", batch_size=20)  # another batch: measured
    assert len(measured) == 2 and len(measured[-1]) == 20


def test_the_cli_lists_what_is_kept_and_forgets_it(own_timings, capsys):
    from aelab.cli import main

    timings.kept("apart | decoder.2", lambda: 1.5)
    assert main(["timings"]) == 0
    out = capsys.readouterr().out
    assert f"{own_timings}: 1 measurement(s)" in out and "apart | decoder.2: 1.5 (" in out
    assert main(["timings", "--forget"]) == 0 and not own_timings.exists()
    assert f"deleted {own_timings}" in capsys.readouterr().out
    assert timings.kept("apart | decoder.2", lambda: 1.2) == 1.2  # forgotten in memory too: measured again
    assert main(["timings", "--forget"]) == 0 and main(["timings", "--forget"]) == 0
    assert "nothing kept" in capsys.readouterr().out
