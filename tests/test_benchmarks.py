"""The benchmark scripts' timing rule: contenders timed in alternating rounds give the true ratio of their costs
even when the machine's speed drifts (a shared CPU), where blocks of repeats would not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
run = pytest.importorskip("run")


class DriftingClock:
    """A fake perf_counter: each unit of work takes longer as time goes on (the machine slows down 3x)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def work(self, units: float) -> None:
        self.now += units * (1.0 if self.now < 20 else 3.0)


def test_interleaved_rounds_rotate_and_recover_the_cost_ratio_under_drift(monkeypatch):
    clock = DriftingClock()
    monkeypatch.setattr(run.time, "perf_counter", clock)
    calls = []
    fns = {name: (lambda name=name, cost=cost: (calls.append(name), clock.work(cost)))
           for name, cost in (("slow", 1.0), ("fast", 0.5), ("mid", 0.8))}
    times = run.interleaved(fns, repeats=12, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"slow": 12, "fast": 12, "mid": 12}
    rounds = [calls[i:i + 3] for i in range(3, len(calls), 3)]  # after the warm-up round
    assert all(sorted(r) == ["fast", "mid", "slow"] for r in rounds)  # each round runs every contender once
    assert {r[0] for r in rounds} == {"slow", "fast", "mid"}  # and the order rotates
    assert run.ratio(times["slow"], times["fast"]) == pytest.approx(2.0)
    assert run.ratio(times["slow"], times["mid"]) == pytest.approx(1.25, rel=0.1)
    # the same costs timed in blocks (all of "slow", then all of "fast", with the slow-down in between) would
    # read the drift as a speed difference
    clock.now, blocks = 8.0, {}
    for name in ("slow", "fast"):
        blocks[name] = [(t0 := clock(), fns[name](), clock() - t0)[-1] for _ in range(12)]
    assert run.ratio(blocks["slow"], blocks["fast"]) == pytest.approx(2.0 / 3)


def test_contenders_run_in_processes_of_their_own_in_alternating_rounds():
    # two trainers that differ only in a process-wide setting (the allocator) and the lecture's loop
    contenders = {"kept": ("fit", {"batch_size": 50, "precision": "fp32"}, {}),
                  "unchanged": ("fit", {"batch_size": 50, "precision": "fp32"}, {"AELAB_ALLOCATOR": "system"}),
                  "loop": ("lecture loop", {}, {}),
                  # the default recipe given a precision choice measured once (as the "fit default" rows are)
                  "given": ("fit", {"choice": {"precision": "fp32", "reason": "given"}}, {})}
    times, faults = run.interleaved_processes(contenders, n=100, repeats=2)
    assert {k: len(v) for k, v in times.items()} == {"kept": 2, "unchanged": 2, "loop": 2, "given": 2}
    assert all(t > 0 for v in times.values() for t in v)
    assert {k: len(v) for k, v in faults.items()} == {"kept": 2, "unchanged": 2, "loop": 2, "given": 2}
    assert [run._batch(c) for c in contenders.values()] == [50, 50, 100, 50]


def test_the_rounding_yardstick_of_the_cuda_graph_benchmark():
    """benchmarks/cuda_graph.py compares weights after the same steps; on the CPU two seeded eager runs agree bit
    for bit, and a change of the learning rate by float32's rounding (1e-7 of itself) shows after a few steps."""
    import torch

    cuda_graph = pytest.importorskip("cuda_graph")
    torch.manual_seed(1234)
    x = torch.rand(20 * 20, 1, 28, 28)
    step = cuda_graph.lecture_step
    assert cuda_graph.weight_difference(step(device="cpu"), step(device="cpu"), x, 20, steps=20) == 0.0
    moved = cuda_graph.weight_difference(step(device="cpu"), step(lr=1e-3 * (1 + cuda_graph.ROUNDING), device="cpu"),
                                         x, 20, steps=20)
    assert 0.0 < moved < 1e-2


def test_the_time_to_quality_verdict_is_the_median_over_seeds_with_unreached_seeds_bounded():
    """benchmarks/ttq.py over several seeds: a seed that never reached the target counts as slower than every
    seed that did; where that makes the median unknown, the median is bounded from below by the seconds it
    trained and the default's ratio to it from above."""
    ttq = pytest.importorskip("ttq")

    def run(recipe, seed, reached, trained):
        return {"recipe": recipe, "train": {"seed": seed}, "reached": reached and {"seconds": reached},
                "epochs": [{"epoch": 1, "trained_seconds": trained / 2}, {"epoch": 2, "trained_seconds": trained}]}

    runs = [run("lecture", 0, 500.0, 490.0), run("default", 0, 60.0, 55.0),
            run("lecture", 1, None, 800.0), run("default", 1, None, 70.0),
            run("lecture", 2, None, 900.0), run("default", 2, 64.0, 60.0)]
    by = ttq.verdict(runs)
    assert by["default"] == {"seeds": [0, 1, 2], "reached": 2, "seconds": [60.0, None, 64.0],
                             "median_seconds": 64.0, "median_seconds_at_least": 64.0}
    # two of three lecture seeds unreached: the median seed is one of them, its time unknown but above 800 s
    assert by["lecture"]["median_seconds"] is None and by["lecture"]["median_seconds_at_least"] == 800.0
    assert ttq.ratios(by) == ({}, {"default/lecture": pytest.approx(64.0 / 800.0)})
    # with the lecture's seed 1 reached, both medians are known: the ratio is theirs
    runs[2] = run("lecture", 1, 700.0, 690.0)
    assert ttq.ratios(ttq.verdict(runs)) == ({"default/lecture": pytest.approx(64.0 / 700.0)}, {})
    # one seed, as the script has always run: its own seconds
    assert ttq.ratios(ttq.verdict(runs[:2])) == ({"default/lecture": pytest.approx(60.0 / 500.0)}, {})
    # a recipe added by --also is judged like the default
    runs.append(run("fp32", 0, 130.0, 120.0))
    assert ttq.ratios(ttq.verdict(runs))[0]["fp32/lecture"] == pytest.approx(130.0 / 700.0)


def test_a_recipe_added_by_also_is_the_default_with_its_settings():
    from aelab.config import TrainConfig

    ttq = pytest.importorskip("ttq")
    name, cfg = ttq.also("fp32=precision:fp32,lr:4e-3", ["train.epochs=2"])
    assert name == "fp32"
    assert cfg == TrainConfig(precision="fp32", lr=4e-3, epochs=2)
    for bad in ("fp32", "default=precision:fp32", "=lr:1"):
        with pytest.raises(SystemExit, match="NAME=key:value"):
            ttq.also(bad)


@pytest.mark.parametrize("script", sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob(
    "*.py")))
def test_every_benchmark_script_imports_and_has_a_main(script):
    """`make bench` and docs/benchmarks.md name these scripts; an import that broke with a change elsewhere
    (a renamed helper) would show only when someone reruns a measurement."""
    import importlib

    module = importlib.import_module(script)
    assert callable(getattr(module, "main", None)) and module.__doc__


@pytest.mark.parametrize("way", ["fft_conv_transpose", "FFTConvTranspose"])
@pytest.mark.parametrize(("c_in", "c_out", "h", "w"), [(32, 32, 20, 20), (32, 1, 24, 24), (3, 5, 7, 9)])
def test_the_fft_transposed_convolutions_of_the_layer_benchmark_are_pytorchs(way, c_in, c_out, h, w):
    """benchmarks/layers.py times a stride-1 transposed convolution by FFT, through autograd and with a backward
    written by hand (its record says both are slower than oneDNN; they must at least compute the same thing):
    output and all three gradients equal PyTorch's conv_transpose2d in float64, to fp32's rounding."""
    import torch
    import torch.nn.functional as F

    layers = pytest.importorskip("layers")
    torch.manual_seed(0)
    x, wt, b = (torch.randn(*shape, dtype=torch.float64, requires_grad=True)
                for shape in ((4, c_in, h, w), (c_in, c_out, 5, 5), (c_out,)))
    y = F.conv_transpose2d(x, wt, b)
    g = torch.randn_like(y)
    truth = [y.detach(), *torch.autograd.grad(y, (x, wt, b), g)]
    x32, w32, b32 = (t.detach().float().requires_grad_() for t in (x, wt, b))
    fn = layers.fft_conv_transpose if way == "fft_conv_transpose" else layers.FFTConvTranspose.apply
    y32 = fn(x32, w32, b32)
    mine = [y32.detach(), *torch.autograd.grad(y32, (x32, w32, b32), g.float())]
    for a, t in zip(mine, truth, strict=True):
        assert a.shape == t.shape
        assert float((a.double() - t).abs().max()) < 1e-5 * float(t.abs().max())


def test_the_warm_start_benchmarks_projected_bottleneck_gives_the_projected_code():
    """benchmarks/warm_start.py's svd start: the d = 2 model's code is the d = 4 source's code projected on the
    top-2 right singular vectors of the source's codes (the encoder's last layer is linear), x: (N, 1, 28, 28)."""
    import torch

    from aelab.models import AutoEncoder

    warm_start = pytest.importorskip("warm_start")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        source, model = AutoEncoder(4), AutoEncoder(2)
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    warm_start.warm_start_(model, source)
    warm_start.svd_bottleneck_(model, source, x)
    with torch.no_grad():
        z = source.encode(x)
        p = torch.linalg.svd(z.double(), full_matrices=False)[2][:2].float()  # (2, 4), each row up to its sign
        torch.testing.assert_close(model.encode(x).abs(), (z @ p.T).abs(), rtol=1e-4, atol=1e-5)
        # and the decoder's first layer reads the code as the source's reads its projection back (p.T p: no sign)
        h = model.decoder[0](model.encode(x)[:, :, None, None])
        torch.testing.assert_close(h, source.decoder[0]((z @ p.T @ p)[:, :, None, None]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape, k", [((3, 1, 28, 28), 5), ((2, 1, 9, 7), 3), ((1, 1, 5, 5), 5)])
def test_first_layer_by_patches_is_pytorchs_convolution(shape, k):
    """benchmarks/first_layer.py times a matrix product of 5x5 patches against Conv2d(1, C, k): it must compute
    the same map (against F.conv2d), with its output in channels_last memory, whatever the image's layout."""
    import first_layer  # in benchmarks/, on the path above: an import error fails the test, not skips it
    import torch
    import torch.nn.functional as F
    torch.manual_seed(0)
    w, b = torch.randn(6, 1, k, k, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    for x in (torch.randn(*shape, dtype=torch.float64),
              torch.randn(*shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last)):
        y = first_layer.by_patches(x, w, b)
        torch.testing.assert_close(y, F.conv2d(x, w, b))
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_the_throughput_benchmark_drops_only_the_collapse_warning(capsys):
    import run

    from aelab.config import TrainConfig
    from aelab.errors import warn
    from aelab.train import collapse_message

    with run.quiet_collapse_warning():
        warn(collapse_message(1, 0.095, 0.1, TrainConfig()))
        warn("skipping damaged checkpoint(s) epoch-1")
    err = capsys.readouterr().err
    assert "collapsed" not in err and err == "aelab: warning: skipping damaged checkpoint(s) epoch-1\n"
