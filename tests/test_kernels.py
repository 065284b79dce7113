"""The taps forward of aelab.kernels against PyTorch's conv_transpose2d: outputs and gradients in float64 for
any shape it takes (hypothesis), in fp32 and bf16 to rounding in the lecture's layer and layout; the bias added
apart against PyTorch's layer the same way; the layer swap is undone however a block ends, and the choice follows
train.kernels and a measurement in the training's precision."""

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from aelab import kernels, timings
from aelab.models import AutoEncoder


@settings(max_examples=80, deadline=None, derandomize=True)
@given(transposed=st.booleans(), n=st.integers(1, 3), c_in=st.integers(1, 5),
       c_out=st.integers(1, kernels.MAX_CHANNELS), k1=st.integers(1, 5), k2=st.integers(1, 5), h=st.integers(1, 8),
       w=st.integers(1, 8), pad=st.integers(0, 4), bias=st.booleans(), channels_last=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_taps_are_pytorchs_convolutions_in_float64(transposed, n, c_in, c_out, k1, k2, h, w, pad, bias,
                                                   channels_last, seed):
    """Any stride-1 convolution or transposed convolution the taps take (padding up to k - 1, any output that
    exists): the output and every gradient PyTorch's, in float64."""
    p = (min(pad, k1 - 1), min(pad, k2 - 1))
    g = torch.Generator().manual_seed(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, c_in, h, w, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    shape = (c_in, c_out, k1, k2) if transposed else (c_out, c_in, k1, k2)
    wt = torch.randn(shape, generator=g, dtype=torch.float64)
    b = torch.randn(c_out, generator=g, dtype=torch.float64) if bias else None
    ours, theirs = ((kernels.conv_transpose2d_taps, F.conv_transpose2d) if transposed
                    else (kernels.conv2d_taps, F.conv2d))
    try:
        theirs(x, wt, b, padding=p)
    except RuntimeError:  # PyTorch finds no output for this input, kernel and padding: neither do the taps
        with pytest.raises(ValueError, match="give no output"):
            ours(x, wt, b, p)
        return
    leaves = [t.requires_grad_() for t in (x, wt, b) if t is not None]
    truth = theirs(x, wt, b, padding=p)
    mine = ours(x, wt, b, p)
    assert mine.shape == truth.shape and mine.dtype == truth.dtype
    torch.testing.assert_close(mine, truth, rtol=1e-12, atol=1e-12)
    up = torch.randn(truth.shape, generator=g, dtype=torch.float64)
    for a, t in zip(torch.autograd.grad(mine, leaves, up), torch.autograd.grad(truth, leaves, up), strict=True):
        torch.testing.assert_close(a, t, rtol=1e-12, atol=1e-12)


def test_the_lecture_layer_in_fp32_channels_last_matches_to_rounding_with_the_same_gradients():
    """decoder.8 as fit runs it: fp32, channels_last; the forward to fp32's rounding of a 800-term sum, the
    backward PyTorch's own, so bit for bit given the same upstream gradient."""
    torch.manual_seed(0)
    m = nn.ConvTranspose2d(32, 1, 5).to(memory_format=torch.channels_last)
    x = torch.randn(50, 32, 24, 24).contiguous(memory_format=torch.channels_last).requires_grad_()
    truth = m(x)
    with kernels.use(nn.Sequential(m), ["0"]):
        mine = m(x)
    assert mine.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(mine, truth, rtol=0, atol=1e-5)
    up = torch.randn_like(truth)
    params = (x, m.weight, m.bias)
    for a, t in zip(torch.autograd.grad(mine, params, up), torch.autograd.grad(truth, params, up), strict=True):
        assert torch.equal(a, t)


def test_taps_refuse_what_they_do_not_compute():
    with pytest.raises(ValueError, match="padding of at most k - 1"):
        kernels.conv_transpose2d_taps(torch.zeros(1, 2, 4, 4), torch.zeros(2, 1, 3, 3), padding=3)
    with pytest.raises(ValueError, match=r"expects x .* weight \(C_in, C_out"):
        kernels.conv_transpose2d_taps(torch.zeros(1, 3, 4, 4), torch.zeros(2, 1, 3, 3))
    with pytest.raises(ValueError, match=r"expects x .* weight \(C_out, C_in"):
        kernels.conv2d_taps(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 3, 3))
    model = AutoEncoder(8)
    for name in ("decoder.6", "encoder.0"):  # 32 output channels
        with pytest.raises(ValueError, match="not a stride-1"):
            with kernels.use(model, [name]):
                pass


@pytest.mark.parametrize("decoder", ["resize-nearest", "pixel-shuffle"])
def test_the_other_decoders_last_conv2d_runs_by_taps_with_pytorchs_gradients(decoder):
    """Their last layer is a Conv2d into the image's channel (after a zero pad, or padded itself): eligible, and
    swapped in it computes what PyTorch's does, with the same weight gradient to fp32's rounding."""
    torch.manual_seed(0)
    model = AutoEncoder(8, decoder=decoder).to(memory_format=torch.channels_last)
    names = [name for name, m in model.named_modules() if kernels.eligible(m)]
    assert len(names) == 1 and type(dict(model.named_modules())[names[0]]) is nn.Conv2d
    x = torch.rand(20, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    truth = model(x)
    g_truth = torch.autograd.grad(truth.square().sum(), model.parameters())
    with kernels.use(model, names):
        assert type(dict(model.named_modules())[names[0]]) is kernels.TapsConv2d
        mine = model(x)
        g_mine = torch.autograd.grad(mine.square().sum(), model.parameters())
    torch.testing.assert_close(mine, truth, rtol=0, atol=1e-5)
    for a, t in zip(g_mine, g_truth, strict=True):
        torch.testing.assert_close(a, t, rtol=1e-3, atol=1e-4)


def test_use_swaps_only_inside_the_block_and_keeps_the_state_dict():
    model = AutoEncoder(8)
    keys = list(model.state_dict())
    assert [name for name, m in model.named_modules() if kernels.eligible(m)] == ["decoder.8"]
    with pytest.raises(RuntimeError, match="inside"):
        with kernels.use(model, ["decoder.8"]):
            assert type(model.decoder[8]) is kernels.TapsConvTranspose2d
            assert list(model.state_dict()) == keys
            raise RuntimeError("inside")
    assert type(model.decoder[8]) is nn.ConvTranspose2d


def test_under_bf16_autocast_the_layer_computes_in_bf16_with_autocasts_gradients():
    """decoder.8 as a bf16 training runs it: autocast casts input and weights to bf16 for a convolution, and so
    do the taps; the output is bf16, within bf16's rounding of the float64 convolution of those bf16 values, and the
    gradients (of the fp32 weights, through the cast) are PyTorch's under autocast, bit for bit."""
    torch.manual_seed(0)
    m = nn.ConvTranspose2d(32, 1, 5).to(memory_format=torch.channels_last)
    x = torch.randn(20, 32, 24, 24).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        truth = m(x)
        with kernels.use(nn.Sequential(m), ["0"]):
            mine = m(x)
    assert mine.dtype == truth.dtype == torch.bfloat16
    w, b = m.weight.bfloat16().double(), m.bias.bfloat16().double()
    exact = F.conv_transpose2d(x.double(), w, b)
    # each of the 25 tap planes is rounded to bf16 (8 bits) before the fp32 sum, and so is the output: the error is
    # at most 2^-8 of the sum of the taps' magnitudes and of the output's
    bound = 2 ** -8 * (F.conv_transpose2d(x.double().abs(), w.abs()) + exact.abs())
    assert ((mine.double() - exact).abs() <= bound).all()
    up = torch.randn_like(truth)
    params = (x, m.weight, m.bias)
    for a, t in zip(torch.autograd.grad(mine, params, up), torch.autograd.grad(truth, params, up), strict=True):
        assert a.dtype == t.dtype and torch.equal(a, t)


@pytest.mark.parametrize("layer", [nn.ConvTranspose2d(32, 32, 3, stride=2), nn.Conv2d(32, 32, 4, stride=2)])
def test_a_layer_kept_in_fp32_under_autocast_computes_as_the_fp32_layer(layer):
    """Under bf16 autocast a layer swapped to fp32 gives what the plain layer gives in fp32 on the bf16 input cast
    up, bit for bit, gradients too (the input's in bf16, as autocast's cast hands it back); outside autocast it is
    the plain layer."""
    torch.manual_seed(0)
    x = torch.randn(8, 32, 9, 9).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_()
    truth = layer(x.float())
    with kernels.use(nn.Sequential(layer), [], ["0"]):
        assert type(layer) is kernels.FP32[type(layer).__mro__[1]]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mine = layer(x)
        assert torch.equal(layer(x.float()), truth)
    assert type(layer) in kernels.FP32 and mine.dtype == torch.float32 and torch.equal(mine, truth)
    up = torch.randn_like(truth)
    params = (x, layer.weight, layer.bias)
    for a, t in zip(torch.autograd.grad(mine, params, up), torch.autograd.grad(truth, params, up), strict=True):
        assert a.dtype == t.dtype and torch.equal(a, t)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(1, 3), c_in=st.integers(1, 4), c_out=st.integers(1, 4), k=st.integers(1, 4),
       stride=st.integers(1, 3), padding=st.integers(0, 2), dilation=st.integers(1, 2), h=st.integers(1, 6),
       extra=st.integers(0, 2), groups=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 16))
def test_the_bias_apart_computes_pytorchs_transposed_convolution(n, c_in, c_out, k, stride, padding, dilation, h,
                                                                  extra, groups, seed):
    """In float64 a ConvTranspose2d with its bias added apart gives PyTorch's layer's output and gradients (input,
    weight, bias) to rounding, for any stride, padding, dilation, groups and output size it takes."""
    torch.manual_seed(seed)
    c_in, c_out = c_in * groups, c_out * groups
    layer = nn.ConvTranspose2d(c_in, c_out, k, stride, padding, dilation=dilation, groups=groups).double()
    size = (h - 1) * stride - 2 * padding + dilation * (k - 1) + 1
    if size < 1:
        return  # no output
    output_size = [size + min(extra, stride - 1)] * 2  # output_padding below the stride
    x = torch.randn(n, c_in, h, h, dtype=torch.float64, requires_grad=True)
    truth = layer(x, output_size)
    with kernels.use(nn.Sequential(layer), [], [], ["0"]):
        assert type(layer) is kernels.BiasApartConvTranspose2d
        mine = layer(x, output_size)
    assert type(layer) is nn.ConvTranspose2d and mine.shape == truth.shape
    torch.testing.assert_close(mine, truth, rtol=1e-12, atol=1e-12)
    up = torch.randn_like(truth)
    params = (x, layer.weight, layer.bias)
    for a, t in zip(torch.autograd.grad(mine, params, up), torch.autograd.grad(truth, params, up), strict=True):
        torch.testing.assert_close(a, t, rtol=1e-12, atol=1e-12)


def test_the_bias_apart_under_autocast_and_in_fp32():
    """Under bf16 autocast the bias apart computes in bf16 as the plain layer does (its output bf16, within bf16's
    rounding of the output, the weights' gradients fp32 and within bf16's rounding of PyTorch's); kept in fp32 too,
    it gives what the bias apart gives in fp32 on the bf16 input cast up, bit for bit."""
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(32, 32, 3, stride=2)
    x = torch.randn(8, 32, 4, 4).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        truth = layer(x)
    with kernels.use(nn.Sequential(layer), [], [], ["0"]):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mine = layer(x)
        in_fp32 = layer(x.float())
    assert mine.dtype == truth.dtype == torch.bfloat16
    # oneDNN adds the bias before its one rounding to bf16; apart the sum is rounded, then the sum with the bias
    torch.testing.assert_close(mine.float(), truth.float(), rtol=2 ** -7, atol=2 ** -7)
    up = torch.randn_like(truth)
    params = (x, layer.weight, layer.bias)
    for a, t in zip(torch.autograd.grad(mine, params, up), torch.autograd.grad(truth, params, up), strict=True):
        assert a.dtype == t.dtype
        torch.testing.assert_close(a.float(), t.float(), rtol=2 ** -6, atol=2 ** -6 * t.abs().max().item())
    with kernels.use(nn.Sequential(layer), [], ["0"], ["0"]):
        assert type(layer) is kernels.Fp32BiasApartConvTranspose2d
        with torch.autocast("cpu", dtype=torch.bfloat16):
            both = layer(x)
    assert both.dtype == torch.float32 and torch.equal(both, in_fp32)


def test_use_refuses_a_layer_it_cannot_swap():
    model = AutoEncoder(8)
    with pytest.raises(ValueError, match="not a plain Conv2d"):
        with kernels.use(model, [], ["decoder.1"]):  # a ReLU
            pass
    with pytest.raises(ValueError, match="stride-1"):
        with kernels.use(model, ["decoder.6"]):  # 32 output channels
            pass
    with pytest.raises(ValueError, match="not a plain ConvTranspose2d"):
        with kernels.use(model, [], [], ["encoder.2"]):  # the bias apart is for transposed convolutions
            pass
    with pytest.raises(ValueError, match="by taps alone"):
        with kernels.use(model, ["decoder.8"], [], ["decoder.8"]):
            pass
    assert all(type(m) in (nn.Conv2d, nn.ConvTranspose2d) for m in model.modules() if hasattr(m, "weight"))


def test_choose_follows_the_setting_the_precision_and_the_measurement(monkeypatch, own_timings):
    model = AutoEncoder(8).to(memory_format=torch.channels_last)
    x = torch.rand(20, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    forward = lambda: model(x)  # noqa: E731
    assert kernels.choose(model, forward, "fp32", "torch")["layers"] == []
    assert kernels.choose(model, forward, "bf16", "taps")["layers"] == ["decoder.8"]
    assert kernels.choose(model, forward, "fp32", "taps")["layers"] == ["decoder.8"]
    convs = ["encoder.0", "encoder.2", "encoder.4", "encoder.6", "encoder.8",
             "decoder.0", "decoder.2", "decoder.4", "decoder.6"]
    for precision in ("fp32", "bf16"):
        state = torch.random.get_rng_state()
        measured = kernels.choose(model, forward, precision, "auto", rounds=3)
        assert torch.equal(torch.random.get_rng_state(), state)
        assert set(measured["speedups"]) == {"decoder.8"} and measured["speedups"]["decoder.8"] > 0
        fast = measured["speedups"]["decoder.8"] >= kernels.MIN_SPEEDUP
        assert measured["layers"] == (["decoder.8"] if fast else []) and precision in measured["reason"]
        # in bf16 every other convolution is timed in fp32 too, and kept so where that measured faster
        islands = measured["fp32_speedups"]
        assert list(islands) == (convs if precision == "bf16" else []) and all(r > 0 for r in islands.values())
        assert measured["fp32_layers"] == [n for n in islands if islands[n] >= kernels.MIN_SPEEDUP]
        # in both precisions every transposed convolution but the taps' is timed with its bias apart
        apart = measured["bias_speedups"]
        assert list(apart) == ["decoder.0", "decoder.2", "decoder.4", "decoder.6"] and min(apart.values()) > 0
        assert measured["bias_apart"] == [n for n in apart if apart[n] >= kernels.MIN_SPEEDUP]
    assert all(p.grad is None for p in model.parameters())  # the measured backward leaves the weights alone
    # a second model of the same layers is not timed again on this machine, but for its new layer at the latent
    timed = []
    monkeypatch.setattr(kernels, "island", lambda m, *a: timed.append(m) or 1.0)
    other = AutoEncoder(4).to(memory_format=torch.channels_last)
    assert kernels.choose(other, lambda: other(x), "bf16", "auto", rounds=1)["fp32_speedups"]["encoder.2"] == \
        measured["fp32_speedups"]["encoder.2"]
    assert timed == [other.decoder[0]]  # (its encoder.8, into 4 channels, is one the taps compute instead)
    # nor in another process (this one with nothing in memory): it reads what the first one kept in the file
    monkeypatch.setattr(timings, "_SEEN", {})
    with monkeypatch.context() as patch:
        for name in ("island", "bias_apart_speedup", "_speedup"):
            patch.setattr(kernels, name, lambda *a: pytest.fail("measured again"))
        assert kernels.choose(model, forward, "bf16", "auto", rounds=3) == measured
    monkeypatch.setattr(kernels, "MIN_SPEEDUP", float("inf"))  # nothing is ever fast enough
    assert kernels.choose(model, forward, "fp32", "auto", rounds=1)["layers"] == []
    none = kernels.choose(model, forward, "bf16", "auto", rounds=1)
    assert none["fp32_layers"] == none["bias_apart"] == []
    monkeypatch.setattr(kernels, "MIN_SPEEDUP", 0.0)  # everything is
    every = kernels.choose(model, forward, "bf16", "auto", rounds=1)
    assert every["fp32_layers"] == convs and every["bias_apart"] == ["decoder.0", "decoder.2", "decoder.4", "decoder.6"]


def test_the_fp32_islands_are_timed_on_the_layers_as_they_compute(monkeypatch, own_timings):
    """A transposed convolution that takes its bias apart is timed in fp32 against bf16 with its bias apart in both;
    one that keeps it fused, fused in both."""
    monkeypatch.setattr(kernels, "bias_apart_speedup", lambda m, *a: 2.0 if m.kernel_size == (4, 4) else 1.0)
    timed = {}
    monkeypatch.setattr(kernels, "island", lambda m, x, rounds, input_grad, apart: (timed.setdefault(m, apart), 0.5)[1])
    model = AutoEncoder(8)
    x = torch.rand(4, 1, 28, 28)
    choice = kernels.choose(model, lambda: model(x), "bf16", "auto", rounds=1)
    assert choice["bias_apart"] == ["decoder.0", "decoder.4"] and choice["fp32_layers"] == []
    modules = dict(model.named_modules())
    assert {name for name, m in modules.items() if timed.get(m)} == {"decoder.0", "decoder.4"}
    assert len(timed) == 9  # every convolution but the taps' one


def test_evaluation_runs_the_layer_by_taps_where_measured_faster_once_per_layer_kind(monkeypatch, own_timings):
    """reconstruct / encode_all / decode_all measure each eligible layer once per machine (by its kind, weight
    shape, padding and threads) and run it by taps inside the evaluation only, where it measured faster: the same
    images as PyTorch's kernels give, to rounding."""
    from aelab.latent import decode_all
    from aelab.metrics import reconstruct

    torch.manual_seed(0)
    model, x = AutoEncoder(8).eval(), torch.rand(40, 1, 28, 28)
    with torch.no_grad():
        truth = model(x)  # PyTorch's kernels, before any measurement
    monkeypatch.setattr(kernels, "MIN_SPEEDUP", 0.0)  # every measured layer counts as faster
    got = reconstruct(model, x)
    kept = json.loads(own_timings.read_text())["timings"]
    assert list(kept) == [f"taps inference | ConvTranspose2d | (32, 1, 5, 5) | (0, 0) | {torch.get_num_threads()}"]
    torch.testing.assert_close(got, truth, rtol=1e-5, atol=1e-6)
    assert type(model.decoder[8]) is nn.ConvTranspose2d  # the plain layer again after the evaluation
    # another model with the same layer is not measured again: its probe forward is never called
    other = AutoEncoder(8).eval()
    with kernels.for_inference(other, forward=lambda: pytest.fail("measured again")):
        assert type(other.decoder[8]) is kernels.TapsConvTranspose2d
    z = torch.randn(30, 8).numpy()
    with torch.no_grad():
        torch.testing.assert_close(decode_all(model, z, batch_size=7), model.decode(torch.as_tensor(z)),
                                   rtol=1e-5, atol=1e-6)
    # where the taps measured slower, PyTorch's kernels stay
    monkeypatch.setattr(kernels, "MIN_SPEEDUP", float("inf"))
    with kernels.for_inference(model, forward=lambda: None):
        assert type(model.decoder[8]) is nn.ConvTranspose2d


def _fit(tmp_path, name, epochs=1, resume=False, **train):
    from aelab.config import lecture_train
    from aelab.train import fit

    torch.manual_seed(0)
    model = AutoEncoder(8)
    g = torch.Generator().manual_seed(1)
    train_x, test_x = torch.rand(200, 1, 28, 28, generator=g), torch.rand(50, 1, 28, 28, generator=g)
    h = fit(model, train_x, test_x, lecture_train(epochs=epochs, batch_size=50, **train), tmp_path / name,
            resume=resume, progress=False)
    return model, h


def test_fit_trains_the_same_model_by_taps_as_by_pytorchs_kernels_and_records_which(tmp_path):
    """Two epochs of the lecture's recipe from the same weights: the loss curves agree to fp32's rounding (the
    taps change only the order of the last layer's sums), the layer is a plain ConvTranspose2d again afterwards,
    and run.json's record says which layers ran by taps."""
    plain, h_plain = _fit(tmp_path, "torch", epochs=2, kernels="torch")
    taps, h_taps = _fit(tmp_path, "taps", epochs=2, kernels="taps")
    assert h_plain.kernels["layers"] == [] and h_taps.kernels["layers"] == ["decoder.8"]
    assert type(taps.decoder[8]) is nn.ConvTranspose2d
    for a, b in zip(h_plain.epochs, h_taps.epochs, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["test_mse"] == pytest.approx(b["test_mse"], rel=1e-4)
    for (name, p), q in zip(plain.state_dict().items(), taps.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)
    record = json.loads((tmp_path / "taps" / "checkpoints" / "epoch-0002.json").read_text())
    assert record["kernels"] == h_taps.kernels


def test_a_resumed_run_computes_its_layers_as_the_checkpoint_says(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "MIN_SPEEDUP", 0.0)  # the first run's measurement takes the taps
    _, first = _fit(tmp_path, "run", epochs=1)
    assert first.kernels["layers"] == ["decoder.8"] and "measured" in first.kernels["reason"]
    monkeypatch.setattr(kernels, "MIN_SPEEDUP", float("inf"))  # a new measurement would not
    _, resumed = _fit(tmp_path, "run", epochs=2, resume=True)
    assert resumed.kernels["layers"] == ["decoder.8"]
    meta = tmp_path / "run" / "checkpoints" / "epoch-0002.json"
    rec = json.loads(meta.read_text())
    del rec["kernels"]  # as a checkpoint written before aelab.kernels
    meta.write_text(json.dumps(rec))
    _, old = _fit(tmp_path, "run", epochs=3, resume=True)
    assert old.kernels["layers"] == [] and "before aelab.kernels" in old.kernels["reason"]


def test_a_bf16_fit_with_layers_in_fp32_records_them_and_its_resume_keeps_them(tmp_path, monkeypatch, own_timings):
    """Where every layer measures faster in fp32, a bf16 run keeps all but the taps' one in fp32: it trains as the
    plain bf16 run does up to the rounding of those layers (its loss within 2 %), records them, and a resumed run
    computes them so without measuring again."""
    _, plain = _fit(tmp_path, "plain", epochs=1, precision="bf16", kernels="torch")
    monkeypatch.setattr(kernels, "MIN_SPEEDUP", 0.0)
    model, mixed = _fit(tmp_path, "mixed", epochs=1, precision="bf16")
    assert mixed.kernels["layers"] == ["decoder.8"] and len(mixed.kernels["fp32_layers"]) == 9
    assert mixed.kernels["bias_apart"] == ["decoder.0", "decoder.2", "decoder.4", "decoder.6"]
    assert all(type(m) in (nn.Conv2d, nn.ConvTranspose2d) for m in model.modules() if hasattr(m, "weight"))
    assert mixed.epochs[0]["train_loss"] == pytest.approx(plain.epochs[0]["train_loss"], rel=0.02)
    monkeypatch.setattr(kernels, "choose", lambda *a, **k: pytest.fail("measured again"))
    _, resumed = _fit(tmp_path, "mixed", epochs=2, resume=True, precision="bf16")
    assert resumed.kernels["fp32_layers"] == mixed.kernels["fp32_layers"]
    assert resumed.kernels["bias_apart"] == mixed.kernels["bias_apart"]


def test_the_report_says_which_layers_ran_by_taps(tmp_path):
    from aelab.report import ran_on

    run = {"environment": {"cpu": "Some CPU", "torch_threads": 2}, "config": {"train": {"device": "auto"}},
           "precision": {"precision": "fp32"}}
    (tmp_path / "run.json").write_text(json.dumps({**run, "kernels": {"layers": ["decoder.8"]}}))
    assert ran_on(tmp_path) == "Some CPU, 2 thread(s), fp32, decoder.8 by taps"
    (tmp_path / "run.json").write_text(json.dumps({**run, "kernels": {"layers": []}}))
    assert ran_on(tmp_path) == "Some CPU, 2 thread(s), fp32"
    bf16 = {**run, "precision": {"precision": "bf16"},
            "kernels": {"layers": ["decoder.8"], "fp32_layers": ["decoder.2"]}}
    (tmp_path / "run.json").write_text(json.dumps(bf16))
    assert ran_on(tmp_path) == "Some CPU, 2 thread(s), bf16 autocast, decoder.8 by taps, decoder.2 in fp32"
    bf16["kernels"]["bias_apart"] = ["decoder.2", "decoder.4"]
    (tmp_path / "run.json").write_text(json.dumps(bf16))
    assert ran_on(tmp_path) == ("Some CPU, 2 thread(s), bf16 autocast, decoder.8 by taps, decoder.2 in fp32, "
                                "the bias of decoder.2, decoder.4 apart")


def test_a_checkpoint_with_taps_resumed_where_they_do_not_run_records_pytorchs_kernels():
    from aelab.train import resumed_kernels

    rec = {"kernels": {"layers": ["decoder.8"], "reason": "measured"}}
    model = AutoEncoder(8)
    assert resumed_kernels(rec, model, torch.device("cpu"), "fp32")["layers"] == ["decoder.8"]
    assert resumed_kernels(rec, model, torch.device("cpu"), "bf16")["layers"] == ["decoder.8"]
    assert resumed_kernels(rec, model, torch.device("cuda"), "fp32")["layers"] == []
    # a checkpoint from before the bias apart computed every bias in its convolution
    assert resumed_kernels(rec, model, torch.device("cpu"), "bf16")["bias_apart"] == []
    rec["kernels"]["bias_apart"] = ["decoder.4"]
    assert resumed_kernels(rec, model, torch.device("cpu"), "bf16")["bias_apart"] == ["decoder.4"]
    assert resumed_kernels(rec, model, torch.device("cuda"), "bf16")["bias_apart"] == []


def test_a_misspelt_kernels_setting_names_the_choices():
    from aelab.config import TrainConfig
    from aelab.errors import ConfigError

    with pytest.raises(ConfigError, match="train.kernels = 'fast' is not allowed: choose one of auto, torch, taps"):
        TrainConfig(kernels="fast")
