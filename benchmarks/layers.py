"""Where a training step of the lecture's autoencoder spends its time: each convolution's forward and backward
(torch.profiler, aten ops grouped by input shape) with its achieved GFLOP/s, and the whole step eager against
``torch.compile`` (interleaved rounds, medians).  Then other ways to compute the decoder's two stride-1
transposed convolutions (decoder.6 and decoder.8, its costliest layers), each timed forward + backward against
the layer as the model runs it, in interleaved rounds: a padded Conv2d with the flipped kernel (the same map),
PyTorch's native kernels instead of oneDNN, and for the last layer (one output channel, which oneDNN handles
poorly) a matrix product followed by ``fold`` (col2im) and the same product followed by k x k shifted adds
(``aelab.kernels``, what ``fit`` runs in fp32 where it measures faster); and the two stride-2 ones (decoder.2,
decoder.4) with the native kernels, as zeros inserted between the input pixels followed by a padded convolution, and
as a sub-pixel convolution (one stride-1 convolution computes every output phase, pixel_shuffle interleaves them).
The stride-1 ones also as an FFT convolution (an eighth of decoder.6's multiply-adds, paid for in transforms
and layout changes).

    python benchmarks/layers.py [--steps 10] [--batch 100] [--precision fp32|bf16] [--threads N] [--sections ...]
        [--out FILE]

Batch 100 unless told, d = 8, channels_last on a CPU (aelab's layout there), Adam, the lecture's loss; with
``--precision bf16`` every step runs under bf16 autocast as ``fit`` does where its measurement chose it, and
the alternatives take bf16 tensors, and a last section (``mixed``) times whole steps with the layers that
this run's per-layer profiles found faster in fp32 kept in fp32 (``fp32_forward``) against the plain bf16 step.

``--sections floor`` (or any list of profile, compile, alternatives, mixed, floor) runs only those.  ``floor``
asks how fast a step could be: in interleaved rounds, without the profiler, the whole step against the forward
and backward of its convolutions alone (each on an input of its training shape, nothing between them: no ReLU,
loss, optimizer or autocast casts of weights) and of its two 32 -> 32 5x5 layers alone (encoder.2, decoder.6:
84 % of the multiply-adds), the last the floor of a step that only oneDNN's convolutions could lower.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from run import _write, interleaved, ratio
from torch.profiler import ProfilerActivity, profile

from aelab import kernels
from aelab.models import AutoEncoder
from aelab.models.summary import layer_table
from aelab.recipe import autocast, keep_freed_memory
from aelab.runs import environment
from aelab.train import lecture_loss

BATCH = 100  # set by --batch
PRECISION = "fp32"  # set by --precision
CPU = torch.device("cpu")


def step_fn(model: torch.nn.Module, x: torch.Tensor, compiled: bool = False, precision: str | None = None):
    precision = precision or PRECISION
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    objective = lambda xb: lecture_loss(model(xb), xb)  # noqa: E731 - the thing compiled
    if compiled:
        objective = torch.compile(objective)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(CPU, precision):
            loss = objective(x)
        loss.backward()
        opt.step()
    return step


def per_layer(steps: int, precision: str | None = None) -> list[dict]:
    """Self time per step of every convolution forward / backward, keyed by the layer it belongs to."""
    torch.manual_seed(0)
    fmt = torch.channels_last
    model = AutoEncoder(8).to(memory_format=fmt)
    x = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=fmt)
    step = step_fn(model, x, precision=precision)
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    # a layer is known by its input's spatial size and its weight's shape (unique in this model); the forward of a
    # Conv2d shows as mkldnn_convolution inside _convolution, of a ConvTranspose2d as _convolution's own time;
    # backward as convolution_backward, whose inputs are (grad_output, input, weight)
    modules = dict(model.named_modules())
    layers = {}
    for row in layer_table(model, (1, 28, 28)):
        key = (row.in_shape[1:], tuple(modules[row.name].weight.shape))
        layers[key] = {"name": row.name, "layer": f"{row.name}: {row.layer}", "macs": row.macs, "forward_ms": 0.0,
                       "backward_ms": 0.0}
    total_ms = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1000 / steps
    for event in prof.key_averages(group_by_input_shape=True):
        kind = {"aten::mkldnn_convolution": "forward_ms", "aten::_convolution": "forward_ms",
                "aten::convolution_backward": "backward_ms"}.get(event.key)
        if kind is None:
            continue
        x, w = event.input_shapes[1:3] if kind == "backward_ms" else event.input_shapes[0:2]
        key = (tuple(x[2:]), tuple(w))
        if key in layers:
            layers[key][kind] += event.self_cpu_time_total / 1000 / steps
    out = []
    for entry in layers.values():
        flops = 2 * entry["macs"] * BATCH
        out.append({**entry, "forward_gflops": flops / entry["forward_ms"] / 1e6 if entry["forward_ms"] else None,
                    "backward_gflops": 2 * flops / entry["backward_ms"] / 1e6 if entry["backward_ms"] else None,
                    "share_of_step": (entry["forward_ms"] + entry["backward_ms"]) / total_ms})
    return out


def eager_vs_compiled(rounds: int = 5, steps: int = 20) -> dict:
    torch.manual_seed(0)
    fmt = torch.channels_last
    x = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=fmt)
    runs = {"eager": step_fn(AutoEncoder(8).to(memory_format=fmt), x),
            "compiled": step_fn(AutoEncoder(8).to(memory_format=fmt), x, compiled=True)}
    for step in runs.values():  # compilation happens here, not in the timing
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, step in runs.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - t0) / steps)
    medians = {name: statistics.median(v) for name, v in times.items()}
    return {"seconds_per_step": medians, "compiled_speedup": medians["eager"] / medians["compiled"]}


class FFTConvTranspose(torch.autograd.Function):
    """conv_transpose2d, stride 1, by FFT with a backward written by hand: both gradients reuse the forward's
    spectra of x and w (autograd through ``torch.fft`` transforms them again), and every batched matrix product
    takes contiguous (frequency, rows, columns) operands.  x: (N, C_in, h, w), w: (C_in, C_out, k, k) ->
    (N, C_out, h + k - 1, w + k - 1), computed in fp32."""

    @staticmethod
    def forward(ctx, x, w, b):
        size, xs, ws = _spectra(x, w)
        ctx.save_for_backward(xs, ws)
        ctx.shapes = (size, x.shape[-2:], w.shape[-1], x.dtype)
        return _product_image(xs, ws, b, size).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        xs, ws = ctx.saved_tensors
        size, (h, wd), k, dtype = ctx.shapes
        gs = _per_frequency(torch.fft.rfft2(g.float(), s=size))                    # (F, N, C_out)
        # d/dx: the correlation of g with w (no wrap-around: p + a < H for p < h, a < k), spectrum G conj(W)
        gx = _from_frequency(torch.bmm(gs, ws.transpose(1, 2).conj().contiguous()), size)[..., :h, :wd]
        # d/dw: the correlation of g with x summed over the batch, spectrum conj(X) G
        gw = _from_frequency(torch.bmm(xs.transpose(1, 2).conj().contiguous(), gs), size)[..., :k, :k]
        return gx.to(dtype), gw.to(dtype), g.float().sum((0, 2, 3)).to(dtype)


def fft_conv_transpose(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """conv_transpose2d, stride 1, by FFT, differentiated by autograd through ``torch.fft`` (``FFTConvTranspose``
    computes the same forward with a backward by hand).  Stride 1 is a full convolution, so by the convolution
    theorem a product per frequency of the output's size (no wrap-around: the output is exactly the full
    convolution's size), the channels mixed at each frequency by a complex matrix product: 4 x 24 x 13 x 32 x 32
    = 1.28 M real multiply-adds per image for decoder.6 against its 10.24 M, but every image's channels
    transformed and laid out again (torch.fft has no bf16 on a CPU: computed in fp32)."""
    size, xs, ws = _spectra(x, w)
    return _product_image(xs, ws, b, size).to(x.dtype)


def _spectra(x: torch.Tensor, w: torch.Tensor):
    """The output's size (H, W) and the spectra of x (F, N, C_in) and w (F, C_in, C_out) at that size, fp32."""
    k = w.shape[-1]
    size = (x.shape[-2] + k - 1, x.shape[-1] + k - 1)
    return size, _per_frequency(torch.fft.rfft2(x.float(), s=size)), _per_frequency(torch.fft.rfft2(w.float(), s=size))


def _product_image(xs: torch.Tensor, ws: torch.Tensor, b: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The (N, C_out, H, W) fp32 image of the per-frequency product of the spectra, plus the bias."""
    return _from_frequency(torch.bmm(xs, ws), size) + b.float().view(1, -1, 1, 1)


def _per_frequency(spectrum: torch.Tensor) -> torch.Tensor:
    """(A, B, H, W') -> (H * W', A, B), contiguous: one matrix per frequency for bmm."""
    a, b_, h, w = spectrum.shape
    return spectrum.permute(2, 3, 0, 1).reshape(h * w, a, b_).contiguous()


def _from_frequency(per_freq: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(H * W', A, B) -> the real (A, B, H, W) images of those spectra."""
    h, w = size
    _, a, b_ = per_freq.shape
    return torch.fft.irfft2(per_freq.view(h, w // 2 + 1, a, b_).permute(2, 3, 0, 1).contiguous(), s=size)


def alternatives(rounds: int = 9) -> dict:
    """Seconds per forward + backward (input and weight gradients) of the decoder's transposed convolutions computed
    several ways, channels_last, batch BATCH: median of interleaved rounds, the ratio to the layer as the model runs
    it, and the largest difference of the outputs.  The stride-1 layers (decoder.6, decoder.8) as a padded
    convolution, with PyTorch's native kernels, and for one output channel a matrix product + fold; the stride-2
    ones (decoder.2, decoder.4; decoder.2 the slowest per multiply-add under bf16) with the native kernels and as
    a fractionally strided convolution: zeros inserted between the input pixels, then a padded convolution
    with the flipped kernel (3 of 4 of its multiply-adds are with zeros), and as a sub-pixel convolution: the
    stride x stride output phases as the channels of one stride-1 convolution, interleaved by pixel_shuffle."""
    def padded_conv(x, w, b):  # conv_transpose2d, stride 1, no padding == full convolution with the flipped kernel
        k = w.shape[-1]
        return F.conv2d(x, w.transpose(0, 1).flip(2, 3), b, padding=k - 1)

    def native(x, w, b, stride=1):
        with torch.backends.mkldnn.flags(enabled=False):
            return F.conv_transpose2d(x, w, b, stride=stride)

    def zeros_inserted(x, w, b, stride):  # stride s: the input spread onto a grid s times finer, then stride 1
        n, c, h, wd = x.shape
        spread = x.new_zeros(n, c, (h - 1) * stride + 1, (wd - 1) * stride + 1).contiguous(
            memory_format=torch.channels_last)
        spread[:, :, ::stride, ::stride] = x
        return padded_conv(spread, w, b)

    def sub_pixel(x, w, b, stride, size):
        # the output's stride x stride phases at once: output pixel s*a + r takes kernel taps r + s*m from input
        # pixel a - m, so one stride-1 convolution with s*s*c_out channels of (k/s) x (k/s) taps (the kernel padded
        # with zeros to a multiple of s), then pixel_shuffle interleaves the phases (Shi et al. 2016)
        c_in, c_out, k = w.shape[0], w.shape[1], w.shape[-1]
        t = -(-k // stride)
        wp = F.pad(w, (0, t * stride - k, 0, t * stride - k)).view(c_in, c_out, t, stride, t, stride)
        wq = wp.permute(1, 3, 5, 0, 2, 4).reshape(c_out * stride * stride, c_in, t, t).flip(2, 3)
        y = F.pixel_shuffle(F.conv2d(x, wq, padding=t - 1), stride)[:, :, :size, :size]
        return y + b.view(1, -1, 1, 1)

    def matmul_fold(x, w, b):  # one output channel: each input pixel adds its k x k patch of w, weighted
        n, c, h, wd = x.shape
        k = w.shape[-1]
        cols = x.permute(0, 2, 3, 1).reshape(n, h * wd, c) @ w.reshape(c, k * k)  # (N, HW, k*k)
        return F.fold(cols.transpose(1, 2), (h + k - 1, wd + k - 1), k) + b.view(1, -1, 1, 1)

    torch.manual_seed(0)
    out = {}
    for name, (c_in, c_out, k, size, stride) in {
            "decoder.2: ConvTranspose2d(32, 32, 3, stride 2)": (32, 32, 3, 4, 2),
            "decoder.4: ConvTranspose2d(32, 32, 4, stride 2)": (32, 32, 4, 9, 2),
            "decoder.6: ConvTranspose2d(32, 32, 5)": (32, 32, 5, 20, 1),
            "decoder.8: ConvTranspose2d(32, 1, 5)": (32, 1, 5, 24, 1)}.items():
        # the layout the model trains in on a CPU: weights and activations channels_last
        dtype = torch.bfloat16 if PRECISION == "bf16" else torch.float32
        w = torch.randn(c_in, c_out, k, k, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_()
        b = torch.randn(c_out, dtype=dtype, requires_grad=True)
        x = torch.randn(BATCH, c_in, size, size, dtype=dtype).contiguous(
            memory_format=torch.channels_last).requires_grad_()
        model = functools.partial(F.conv_transpose2d, stride=stride)
        if stride == 1:
            ways = {"conv_transpose2d (the model's)": model, "padded conv2d, flipped kernel": padded_conv,
                    "native kernels, not oneDNN": native,
                    "FFT (torch.fft), channels mixed per frequency": fft_conv_transpose,
                    "FFT, backward by hand from the forward's spectra": FFTConvTranspose.apply}
        else:
            ways = {"conv_transpose2d (the model's)": model,
                    "zeros inserted, then padded conv2d": functools.partial(zeros_inserted, stride=stride),
                    "native kernels, not oneDNN": functools.partial(native, stride=stride),
                    "sub-pixel: one conv2d, then pixel_shuffle": functools.partial(
                        sub_pixel, stride=stride, size=(size - 1) * stride + k)}
        if c_out == 1:
            ways["matrix product + fold"] = matmul_fold
            # what fit uses in fp32 where its measurement finds it faster (aelab.kernels): forward by one matrix
            # product and k x k shifted adds, backward PyTorch's
            ways["matrix product + shifted adds (aelab.kernels)"] = kernels.conv_transpose2d_taps
        with torch.no_grad():
            reference = model(x, w, b)
            differences = {way: float((fn(x, w, b) - reference).abs().max()) for way, fn in ways.items()}
        fns = {way: (lambda fn=fn, x=x, w=w, b=b: fn(x, w, b).square().sum().backward()) for way, fn in ways.items()}
        times = interleaved(fns, rounds, warmup=2)
        base = times["conv_transpose2d (the model's)"]
        out[name] = {way: {"seconds": statistics.median(t), "speedup": ratio(base, t),
                           "max_difference": differences[way]} for way, t in times.items()}
    return out


def fp32_forward(layer: torch.nn.Module):
    """``layer``'s forward outside bf16 autocast: its input back in fp32, its convolution (and so its backward) in
    fp32 with the fp32 weights."""
    forward = layer.forward

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return forward(x.float())
    return run


def mixed_step(steps: int, bf16_layers: list[dict], rounds: int = 11, inner: int = 20) -> dict:
    """bf16 autocast with some layers kept in fp32: the layers whose forward + backward the per-layer profiles of
    this run (``bf16_layers`` from ``per_layer`` under bf16, and one more in fp32 here) found faster in fp32.
    Whole training steps (batch BATCH) timed in interleaved rounds against the plain bf16 step and the fp32 step."""
    profiles = {p: {row["name"]: row["forward_ms"] + row["backward_ms"] for row in layers}
                for p, layers in (("fp32", per_layer(steps, "fp32")), ("bf16", bf16_layers))}
    slower = [name for name, ms in profiles["bf16"].items() if profiles["fp32"][name] < ms]
    fmt = torch.channels_last

    def contender(precision: str, fp32_layers=()):
        torch.manual_seed(0)
        model = AutoEncoder(8).to(memory_format=fmt)
        modules = dict(model.named_modules())
        for name in fp32_layers:
            modules[name].forward = fp32_forward(modules[name])
        step = step_fn(model, torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=fmt), precision=precision)

        def run():
            for _ in range(inner):
                step()
        return run
    fns = {"bf16 autocast": contender("bf16"), "bf16, the layers faster in fp32 kept fp32": contender("bf16", slower),
           "fp32": contender("fp32")}
    times = interleaved(fns, rounds, warmup=2)
    base = times["bf16 autocast"]
    return {"layer_ms": profiles, "fp32_layers": slower,
            "steps": {name: {"seconds_per_step": statistics.median(t) / inner, "speedup_vs_bf16": ratio(base, t)}
                      for name, t in times.items()}}


def floor(rounds: int = 11, inner: int = 20) -> dict:
    """Seconds per step: the whole training step (``step_fn``) against the forward + backward of the model's
    convolutions alone, and of its two 5x5 32 -> 32 layers alone, interleaved rounds of ``inner`` steps each."""
    keep_freed_memory()  # as fit does: the three contenders' tensors come from kept pages, not fresh ones
    torch.manual_seed(0)
    fmt = torch.channels_last
    model = AutoEncoder(8).to(memory_format=fmt)
    x = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=fmt)
    step = step_fn(model, x)
    # every convolution's input as the step gives it: record each layer's input once (shape, dtype, layout)
    convs = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)}
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, a, name=name: inputs.setdefault(name, a[0].detach().clone()))
             for name, m in convs.items()]
    with torch.no_grad(), autocast(CPU, PRECISION):
        model(x)
    for h in hooks:
        h.remove()
    big = [name for name, m in convs.items() if m.kernel_size == (5, 5) and m.in_channels == m.out_channels == 32]

    def layers_only(names):
        # the image itself needs no gradient (as in the step); every later layer's input does
        feeds = {name: inputs[name].requires_grad_(name != "encoder.0") for name in names}

        def run():
            for _ in range(inner):
                for t in [*model.parameters(), *feeds.values()]:  # as in the step: gradients written, not added
                    t.grad = None
                for name in names:
                    with autocast(CPU, PRECISION):
                        y = convs[name](feeds[name])
                    y.backward(torch.ones_like(y))
        return run

    def whole():
        for _ in range(inner):
            step()
    fns = {"whole step": whole, "every convolution alone": layers_only(list(convs)),
           "the two 5x5 32 -> 32 layers alone": layers_only(big)}
    times = interleaved(fns, rounds, warmup=2)
    base = times["whole step"]
    macs = {row.name: row.macs for row in layer_table(model, (1, 28, 28))}
    # forward + backward: 3 x 2 flops per multiply-add and image (the two 5x5 layers alone count only theirs)
    flops = dict(zip(fns, (6 * BATCH * sum(macs[n] for n in names) for names in (convs, convs, big)), strict=True))
    out = {}
    for name, t in times.items():
        seconds = statistics.median(t) / inner
        out[name] = {"seconds_per_step": seconds, "share_of_step": ratio(t, base),
                     "gflops": flops[name] / seconds / 1e9, "seconds_per_step_rounds": [v / inner for v in t]}
    return {"layers": list(convs), "two_big_layers": big, "threads": torch.get_num_threads(), "steps": out,
            "big_layers_share_of_macs": flops["the two 5x5 32 -> 32 layers alone"] / flops["whole step"]}


SECTIONS = ("profile", "compile", "alternatives", "mixed", "floor")


def main() -> None:
    global BATCH, PRECISION
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default=PRECISION)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch's threads (default: as torch starts)")
    ap.add_argument("--sections", default=",".join(SECTIONS[:4]),
                    help=f"comma-separated, of {', '.join(SECTIONS)} (mixed only under bf16; it needs profile)")
    args = ap.parse_args()
    BATCH, PRECISION = args.batch, args.precision
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    result = {"environment": environment(), "batch": BATCH, "precision": PRECISION}
    if "profile" in sections or "mixed" in sections:
        result["layers"] = per_layer(args.steps)
    if "compile" in sections:
        result["compile"] = eager_vs_compiled()
    if "alternatives" in sections:
        result["alternatives"] = alternatives()
    if "mixed" in sections and PRECISION == "bf16":
        result["mixed"] = mixed_step(args.steps, result["layers"])
    if "floor" in sections:
        result["floor"] = floor()
    _write(result, args.out)


if __name__ == "__main__":
    main()
