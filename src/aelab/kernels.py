"""Other ways to compute a few of the model's layers on a CPU, each taken only where a short measurement in the
training's precision shows it faster.  The decoder's last layer, the stride-1 convolution into the image's few
channels (a ConvTranspose2d in the lecture's decoder, a Conv2d in the resize and pixel-shuffle ones), computed as
one matrix product and k x k shifted adds ("taps"); and under bf16 autocast the small layers that oneDNN runs
slower in bf16 than in fp32, in fp32.

Why: oneDNN, which runs PyTorch's convolutions on a CPU, handles a layer with one output channel poorly.  The
lecture's ``ConvTranspose2d(32, 1, 5)`` is 2 % of the model's multiply-adds and took 10 % of an fp32 training step
on a Xeon without native bf16, its forward at 15 GFLOP/s against 228 to 310 for the 32 -> 32 layers.  A stride-1
transposed convolution is a scatter: input pixel (a, b) adds its C_in values times the kernel, a k x k patch, at
output (a + i, b + j).  So every tap of every pixel is one matrix product, P = W^T X: (C_out k k, C_in) @
(C_in, N H W), a shape BLAS runs at full speed, and the output is the sum of the k k tap planes of P, each
shifted by its tap (i, j): k k adds of an (N, H, W) plane per output channel.  On an avx512 Xeon in fp32 the
layer's forward + backward ran 1.49x faster so, and ``fit`` 1.036x (docs/benchmarks.md, "The decoder's last layer
by a matrix product and shifted adds").  A stride-1 Conv2d is the transposed convolution with the flipped kernel,
its channels swapped, cropped by k - 1 - p instead of p: the same scatter.

Under bf16 autocast the layer computes as autocast would have it compute: on bf16 copies of its input and weights,
the tap planes summed in fp32 and the output rounded to bf16.  Whether that pays depends on the CPU: on a Zen 4
(avx512_bf16, no AMX) the forward ran 3.7x to 3.9x oneDNN's at one thread and the training step 1.05x faster;
on an AMX Xeon, whose bf16 convolutions are fast, the layer's forward + backward ran 0.62x (docs/benchmarks.md,
"The decoder's last layer by taps, and small layers in fp32, under bf16").

Under bf16 autocast a few small layers run slower than in fp32: oneDNN's bf16 kernel for the lecture decoder's
``ConvTranspose2d(32, 32, 3, stride 2)`` took 3.9 ms of a 62 ms step forward + backward on a Zen 4 at one thread,
its fp32 kernel 1.7 ms (with it in fp32 and the last layer by taps the step ran 1.10x PyTorch's).  ``choose``
times every other convolution's forward + backward both ways on its training input and keeps those at least
``MIN_SPEEDUP`` faster in fp32 out of autocast (``Fp32ConvTranspose2d``, ``Fp32Conv2d``: the input cast to fp32,
the output left fp32 for the next layer's autocast to cast back).

A transposed convolution's bias gradient is slow in PyTorch's CPU backward: on a Zen 4 at one thread the lecture
decoder's ``ConvTranspose2d(32, 32, 3, stride 2)`` took 4.8 ms forward + backward under bf16 autocast, 0.8 ms
with its bias added after the convolution (autograd then sums the output's gradient for it), and its 5x5 layer
18.8 against 15.9 ms (docs/bias-apart-zen4.json; the bf16 step 1.12x faster so, two trainings side by side:
docs/benchmarks.md, "The transposed convolutions' bias apart"); the encoder's Conv2d layers gained nothing so.
``choose`` times every transposed convolution the taps do not compute both ways, in the training's precision, and
adds the bias apart (``BiasApartConvTranspose2d``) where that measured at least ``MIN_SPEEDUP`` faster; the fp32
islands are then timed on the layer as it computes (``Fp32BiasApartConvTranspose2d`` where both hold).

The taps' backward is PyTorch's own (``aten.convolution_backward``, what autograd runs after ``conv_transpose2d``), so
the gradients are the library's to the bit; only the forward's rounding differs (its sums in another order).

``choose(model, forward, precision)`` makes these measurements on the layers' training inputs, in the training's
precision; ``use(model, layers, fp32, bias_apart)`` runs the chosen layers so inside a ``with`` block (``fit``
does both).  ``for_inference(model, forward)`` chooses the taps the same way for an evaluation (aelab's evaluation
functions call it), which runs in fp32 whatever precision the model trained in.  Every measurement is made once
per machine and kept (``aelab.timings``): a ratio near ``MIN_SPEEDUP`` would otherwise fall on either side of it
from one run to the next (decoder.0's bias apart measured 1.08x to 1.14x on a Zen 4), and with it the rounding,
so that two runs of one seed trained different weights.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from aelab import timings
from aelab.recipe import autocast

KERNELS = ("auto", "torch", "taps")  # train.kernels: measure, PyTorch's kernels only, taps wherever allowed
MAX_CHANNELS = 4  # taps only for layers into at most this many channels (an image's): C_out k k plane adds each
MIN_SPEEDUP = 1.1  # below this the layer keeps PyTorch's kernels (a change of rounding is not worth less)


def _full_scatter(x: torch.Tensor, weight_t: torch.Tensor) -> torch.Tensor:
    """The full stride-1 transposed convolution of x: (N, C_in, H, W) with weight_t: (C_in, C_out, k1, k2), no
    bias: (N, C_out, H + k1 - 1, W + k2 - 1), summed in at least fp32 (as oneDNN's sums are)."""
    n, c_in, h, w = x.shape
    c_out, k1, k2 = weight_t.shape[1:]
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c_in)   # (N H W, C_in): a view when x is channels_last
    taps = (weight_t.reshape(c_in, c_out * k1 * k2).t() @ rows.t()).view(c_out, k1, k2, n, h, w)
    y = x.new_zeros(n, c_out, h + k1 - 1, w + k2 - 1, dtype=torch.promote_types(x.dtype, torch.float32))
    for i in range(k1):
        for j in range(k2):
            y[:, :, i:i + h, j:j + w] += taps[:, i, j].transpose(0, 1)  # tap (i, j) of every pixel, shifted
    return y


class _Taps(torch.autograd.Function):
    """A stride-1 convolution (transposed or not) by ``_full_scatter``, its backward PyTorch's."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding: tuple[int, int], transposed: bool):
        k1, k2 = weight.shape[2:]
        # a convolution is the transposed convolution with the flipped kernel, its in and out channels swapped,
        # whose full output loses k - 1 - p rows and columns on each side; a transposed one's loses its padding p
        y = _full_scatter(x, weight if transposed else weight.flip(2, 3).transpose(0, 1))
        if bias is not None:
            y += bias.view(1, -1, 1, 1)  # in place, on the full output: the crop below keeps what it needs
        c1, c2 = padding if transposed else (k1 - 1 - padding[0], k2 - 1 - padding[1])
        y = y[:, :, c1:y.shape[2] - c1, c2:y.shape[3] - c2]
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.transposed, ctx.has_bias = padding, transposed, bias is not None
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return y.to(x.dtype).contiguous(memory_format=fmt)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        bias_sizes = [weight.shape[1 if ctx.transposed else 0]] if ctx.has_bias else None
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, x, weight, bias_sizes, [1, 1], list(ctx.padding), [1, 1], ctx.transposed, [0, 0], 1,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias])
        return gx, gw, gb if ctx.has_bias else None, None, None


def _checked(name: str, x, weight, padding, transposed: bool) -> tuple[int, int]:
    """padding as a pair, once x, weight and padding are known to make an output."""
    padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
    if x.ndim != 4 or weight.ndim != 4 or x.shape[1] != weight.shape[0 if transposed else 1]:
        shape = "(C_in, C_out, k1, k2)" if transposed else "(C_out, C_in, k1, k2)"
        raise ValueError(f"{name} expects x (N, C_in, H, W) and weight {shape}, got {tuple(x.shape)} and "
                         f"{tuple(weight.shape)}")
    kernel = weight.shape[2:]
    if not all(0 <= p < k for p, k in zip(padding, kernel, strict=True)):
        raise ValueError(f"{name} takes a padding of at most k - 1, got {padding} for kernel {tuple(kernel)}")
    size = [h + (k - 1 - 2 * p if transposed else 2 * p - k + 1) for h, k, p in zip(x.shape[2:], kernel, padding,
                                                                                   strict=True)]
    if min(size) < 1:
        raise ValueError(f"{name}: input {tuple(x.shape[2:])}, kernel {tuple(kernel)} and padding {padding} give no "
                         f"output ({size[0]} x {size[1]})")
    return padding


def conv_transpose2d_taps(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                          padding: int | tuple[int, int] = 0) -> torch.Tensor:
    """``F.conv_transpose2d(x, weight, bias, stride=1, padding=padding)`` by one matrix product and k x k shifted
    adds.  x: (N, C_in, H, W); weight: (C_in, C_out, k1, k2); -> (N, C_out, H + k1 - 1 - 2 p1, W + k2 - 1 - 2 p2)."""
    return _Taps.apply(x, weight, bias, _checked("conv_transpose2d_taps", x, weight, padding, True), True)


def conv2d_taps(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                padding: int | tuple[int, int] = 0) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride=1, padding=padding)`` the same way.  x: (N, C_in, H, W); weight:
    (C_out, C_in, k1, k2); -> (N, C_out, H - k1 + 1 + 2 p1, W - k2 + 1 + 2 p2)."""
    return _Taps.apply(x, weight, bias, _checked("conv2d_taps", x, weight, padding, False), False)


def _on_cpu(taps, m: nn.Conv2d | nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``taps(x, weight, bias, padding)`` for layer m; under CPU autocast on x, weight and bias cast to autocast's
    dtype, as autocast casts them for a convolution (the casts are in the graph: the fp32 weights get the
    gradient)."""
    if not torch.is_autocast_enabled("cpu"):
        return taps(x, m.weight, m.bias, m.padding)
    dtype = torch.get_autocast_dtype("cpu")
    with torch.autocast("cpu", enabled=False):
        return taps(x.to(dtype), m.weight.to(dtype), None if m.bias is None else m.bias.to(dtype), m.padding)


class TapsConvTranspose2d(nn.ConvTranspose2d):
    """A ConvTranspose2d whose forward is ``conv_transpose2d_taps`` on a CPU, in autocast's dtype under autocast
    (``use`` gives a layer this class for a while: same parameters, same state_dict)."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None or x.device.type != "cpu":
            return super().forward(x, output_size)
        return _on_cpu(conv_transpose2d_taps, self, x)


class TapsConv2d(nn.Conv2d):
    """A Conv2d whose forward is ``conv2d_taps`` on a CPU (as ``TapsConvTranspose2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        return _on_cpu(conv2d_taps, self, x)


TAPS = {nn.ConvTranspose2d: TapsConvTranspose2d, nn.Conv2d: TapsConv2d}  # a layer's class -> its class by taps


def _fp32(x: torch.Tensor):
    """The context of a layer kept in fp32: autocast off where it is on (x then comes in as bf16)."""
    return torch.autocast(x.device.type, enabled=False) if torch.is_autocast_enabled(x.device.type) else nullcontext()


class Fp32ConvTranspose2d(nn.ConvTranspose2d):
    """A ConvTranspose2d computed in fp32 under autocast, forward and backward, its output fp32 (the next
    convolution's autocast casts it back); outside autocast the plain layer."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        with _fp32(x):  # the plain class by name: ``island`` calls this on a plain layer
            return nn.ConvTranspose2d.forward(self, x.float(), output_size)


class Fp32Conv2d(nn.Conv2d):
    """A Conv2d computed in fp32 under autocast (as ``Fp32ConvTranspose2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _fp32(x):
            return nn.Conv2d.forward(self, x.float())


FP32 = {nn.ConvTranspose2d: Fp32ConvTranspose2d, nn.Conv2d: Fp32Conv2d}  # a layer's class -> its class in fp32


class BiasApartConvTranspose2d(nn.ConvTranspose2d):
    """A ConvTranspose2d whose bias is added after the convolution, in the output's dtype (autocast's, as autocast
    casts a convolution's bias): its gradient is then autograd's sum of the output's gradient, not the
    convolution backward's (slow on a CPU: the module docstring)."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        output_padding = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)
        y = F.conv_transpose2d(x, self.weight, None, self.stride, self.padding, output_padding, self.groups,
                               self.dilation)
        return y if self.bias is None else y + self.bias.to(y.dtype).view(1, -1, 1, 1)


class Fp32BiasApartConvTranspose2d(BiasApartConvTranspose2d):
    """``BiasApartConvTranspose2d`` computed in fp32 under autocast (as ``Fp32ConvTranspose2d``)."""

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        with _fp32(x):
            return BiasApartConvTranspose2d.forward(self, x.float(), output_size)


BIAS_APART = {nn.ConvTranspose2d: BiasApartConvTranspose2d}  # a layer's class -> its class with the bias apart
FP32_BIAS_APART = {nn.ConvTranspose2d: Fp32BiasApartConvTranspose2d}  # ... in fp32 too


def eligible(m: nn.Module) -> bool:
    """A plain Conv2d or ConvTranspose2d that the taps compute: stride 1, no dilation, one group, zero padding of at
    most k - 1 given as numbers, into at most ``MAX_CHANNELS`` channels."""
    return (type(m) in TAPS and m.stride == (1, 1) and m.dilation == (1, 1) and m.groups == 1
            and m.padding_mode == "zeros" and m.out_channels <= MAX_CHANNELS and not isinstance(m.padding, str)
            and all(0 <= p < k for p, k in zip(m.padding, m.kernel_size, strict=True)))


@contextmanager
def use(model: nn.Module, layers: list[str], fp32: list[str] = (), bias_apart: list[str] = ()):
    """Run the named layers (names as ``model.named_modules`` gives them, each ``eligible``) by taps, those named
    in ``fp32`` (Conv2d or ConvTranspose2d) in fp32 under autocast, and the ConvTranspose2d named in
    ``bias_apart`` with their bias added apart (in fp32 too where named in both), inside the block; they are the
    plain layers again afterwards, however the block ends."""
    modules = dict(model.named_modules())
    both = sorted(set(layers) & (set(fp32) | set(bias_apart)))
    if both:
        raise ValueError(f"a layer by taps is computed by taps alone, got {both} in fp32 or with the bias apart too")
    ways = {(True, False): FP32, (False, True): BIAS_APART, (True, True): FP32_BIAS_APART}
    swapped = [(modules[name], type(modules[name]), TAPS) for name in layers]
    swapped += [(modules[name], type(modules[name]), ways[name in fp32, name in bias_apart])
                for name in dict.fromkeys([*fp32, *bias_apart])]
    for m, kind, classes in swapped:
        if classes is TAPS and not eligible(m):
            raise ValueError(f"layer {m!r} is not a stride-1 Conv2d or ConvTranspose2d into at most {MAX_CHANNELS} "
                             "channels")
        if kind not in classes:
            raise ValueError(f"layer {m!r} is not a plain " + ("ConvTranspose2d (the bias apart is for those)"
                                                               if classes is not FP32 else "Conv2d or ConvTranspose2d"))
    for m, kind, classes in swapped:
        m.__class__ = classes[kind]
    try:
        yield
    finally:
        for m, kind, _ in swapped:
            m.__class__ = kind


def choose(model: nn.Module, forward, precision: str, kernels: str = "auto", rounds: int = 7) -> dict:
    """Which of ``model``'s layers run otherwise in training, where ``forward()`` runs the model on a training batch
    and precision is the training's (fp32, or bf16 for bf16 autocast): none off a CPU or for kernels "torch";
    every eligible one by taps for "taps"; for "auto", timed on the layer's own input in ``rounds`` pairs (the
    order flipping from pair to pair) and kept where the median of the pairs' ratios is at least ``MIN_SPEEDUP``:
    by taps the eligible layers whose no-grad forward in that precision is so faster than PyTorch's; with the bias
    apart the other ConvTranspose2d whose forward + backward is so faster that way (``bias_apart_speedup``); and
    in bf16, in fp32 the other convolutions whose forward + backward, as they then compute, is so faster in fp32
    than in bf16 (``island``).  Returns {"layers": [...], "fp32_layers": [...], "bias_apart": [...], "reason":
    ..., "speedups": {layer: ratio}, "fp32_speedups": {...}, "bias_speedups": {...}} for run.json; the global RNG
    is left as it was.  Each ratio is measured once per machine and then kept (``aelab.timings``)."""
    names = [name for name, m in model.named_modules() if eligible(m)]
    convs = [name for name, m in model.named_modules() if type(m) in FP32 and not eligible(m)]
    device = next(model.parameters()).device
    none = {"layers": [], "fp32_layers": [], "bias_apart": []}
    if kernels == "torch" or not names + convs:
        return {**none, "reason": "set by train.kernels" if names + convs else "no eligible layer"}
    if device.type != "cpu":
        return {**none, "reason": f"PyTorch's kernels on {device.type} (taps: on a CPU)"}
    if kernels == "taps":
        return {**none, "layers": names, "reason": "set by train.kernels"}
    modules = dict(model.named_modules())
    transposed = [name for name in convs if type(modules[name]) in BIAS_APART and modules[name].bias is not None]
    islands = convs if precision == "bf16" else []
    first = next(name for name, m in model.named_modules() if type(m) in FP32)  # its input needs no gradient
    with autocast(device, precision):  # the layers' inputs, and their forwards, as the training's steps have them
        inputs = _layer_inputs(model, forward, list(dict.fromkeys(names + transposed + islands)))
        # a layer the forward does not reach (none in aelab's models) keeps PyTorch's kernels
        speedups = {name: _measured_once("taps", modules[name], inputs[name], rounds, False) for name in names
                    if name in inputs}
        bias_speedups = {name: _measured_once("apart", modules[name], inputs[name], rounds, name != first)
                         for name in transposed if name in inputs}
        apart = [name for name in transposed if bias_speedups.get(name, 0.0) >= MIN_SPEEDUP]
        fp32_speedups = {name: _measured_once("island", modules[name], inputs[name], rounds, name != first,
                                              name in apart) for name in islands if name in inputs}
    return {"layers": [name for name in names if speedups.get(name, 0.0) >= MIN_SPEEDUP], "speedups": speedups,
            "fp32_layers": [name for name in islands if fp32_speedups.get(name, 0.0) >= MIN_SPEEDUP],
            "fp32_speedups": fp32_speedups, "bias_apart": apart, "bias_speedups": bias_speedups,
            "reason": f"taps where the forward in {precision} measured >= {MIN_SPEEDUP}x PyTorch's, the bias apart "
                      f"where forward + backward measured >= {MIN_SPEEDUP}x so"
                      + (f", fp32 where forward + backward measured >= {MIN_SPEEDUP}x bf16's" if islands else "")
                      + f" (median of {rounds} pairs, each measured once per machine, layer kind, input and thread "
                        "count: aelab.timings)"}


def _measured_once(what: str, m: nn.Module, x: torch.Tensor, rounds: int, input_grad: bool,
                   apart: bool = False) -> float:
    """A speed-up of (plain) layer m on x, kept per machine (``aelab.timings``) by measurement ("taps": the taps'
    no-grad forward over PyTorch's; "island": fp32's forward + backward over bf16's; "apart": the bias apart's
    over the fused bias's), layer kind, input, precision and thread count: the trainings of a study have
    the same layers but at the latent, and every run on the machine then makes the same choice."""
    key = timings.key(what, *_signature(m), m.stride, getattr(m, "output_padding", None), m.dilation, m.groups,
                      m.bias is not None, *timings.tensor(x), input_grad, apart, torch.is_autocast_enabled("cpu"))
    if what == "taps":
        return timings.kept(key, lambda: _speedup(m, x, rounds))
    if what == "island":
        return timings.kept(key, lambda: island(m, x, rounds, input_grad, apart))
    return timings.kept(key, lambda: bias_apart_speedup(m, x, rounds, input_grad))


def _forward_backward_ratio(m: nn.Module, x: torch.Tensor, classes: tuple[type, type], rounds: int,
                            input_grad: bool) -> float:
    """Layer m's forward + backward on x as classes[0]'s forward computes it, over as classes[1]'s does: the median
    of ``rounds`` pairs' time ratios (``median_ratio``).  The gradients are computed by ``torch.autograd.grad``
    (the weights' ``.grad`` is left alone); of x only where ``input_grad``."""
    x = x.detach().requires_grad_(input_grad)
    wrt = [p for p in (x, *m.parameters()) if p.requires_grad]

    def step(cls):
        y = cls.forward(m, x)
        torch.autograd.grad(y, wrt, torch.ones_like(y))

    return median_ratio([lambda cls=cls: step(cls) for cls in classes], rounds)


def island(m: nn.Module, x: torch.Tensor, rounds: int, input_grad: bool = True, apart: bool = False) -> float:
    """How much faster (plain) layer m's forward + backward on x is in fp32 than under the caller's bf16 autocast,
    with its bias added apart in both where ``apart``."""
    kind = type(m)
    classes = (BIAS_APART[kind], FP32_BIAS_APART[kind]) if apart else (kind, FP32[kind])
    return _forward_backward_ratio(m, x, classes, rounds, input_grad)


def bias_apart_speedup(m: nn.Module, x: torch.Tensor, rounds: int, input_grad: bool = True) -> float:
    """How much faster (plain) ConvTranspose2d m's forward + backward on x is with its bias added apart than by
    PyTorch's convolution with the bias, in the caller's precision."""
    return _forward_backward_ratio(m, x, (type(m), BIAS_APART[type(m)]), rounds, input_grad)


def _signature(m: nn.Module) -> tuple:
    return type(m).__name__, tuple(m.weight.shape), tuple(m.padding), torch.get_num_threads()


@contextmanager
def for_inference(model: nn.Module, forward):
    """Inside the block, ``model``'s eligible layers run by taps where their no-grad forward measured at least
    ``MIN_SPEEDUP`` faster so (``choose``'s rule) on a CPU in fp32; ``forward()`` runs the model on a batch of
    the evaluation and is called only to measure a layer not yet measured on this machine (each layer's speed-up
    is kept by its kind, weight shape, padding and thread count, ``aelab.timings``, so every model with such a
    layer computes it the same way, and a score's last digits, about 1e-8 here, do not change from run to run).
    On a Zen 4 in fp32 the lecture decoder's last layer, ``ConvTranspose2d(32, 1, 5)``, measured 2.4x to 3x
    faster so, and ``metrics.reconstruct`` 1.2x (docs/benchmarks.md, "The study's last seconds";
    docs/inference-taps-zen4.json)."""
    params = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    names = [name for name, m in model.named_modules() if eligible(m)] if params is not None else []
    if not names or params.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        yield
        return
    modules = dict(model.named_modules())
    inputs: dict[str, torch.Tensor] = {}

    def measure(name: str) -> float:  # forward() runs only where a layer is not yet measured on this machine
        inputs.update(inputs or _layer_inputs(model, forward, names))
        return _speedup(modules[name], inputs[name], 7) if name in inputs else 0.0

    chosen = [name for name in names if timings.kept(timings.key("taps inference", *_signature(modules[name])),
                                                     lambda name=name: measure(name)) >= MIN_SPEEDUP]
    with use(model, chosen):
        yield


def _speedup(m: nn.Module, x: torch.Tensor, rounds: int) -> float:
    """PyTorch's no-grad forward time of (plain) layer m on x over the taps', the median of ``rounds`` pairs'
    ratios, each forward as the layer runs it (under the caller's autocast, if any)."""
    ways = (lambda: type(m).forward(m, x), lambda: TAPS[type(m)].forward(m, x))
    with torch.no_grad():
        return median_ratio(ways, rounds)


def median_ratio(ways, rounds: int) -> float:
    """The median over ``rounds`` pairs of ways[0]()'s time over ways[1]()'s, the order flipping from pair to pair;
    a first pair warms both up and is not counted."""
    ratios = []
    for r in range(rounds + 1):
        seconds = [0.0, 0.0]
        for i in (0, 1) if r % 2 else (1, 0):
            t0 = time.perf_counter()
            ways[i]()
            seconds[i] = time.perf_counter() - t0
        if r:
            ratios.append(seconds[0] / seconds[1])
    return statistics.median(ratios)


def _layer_inputs(model: nn.Module, forward, names: list[str]) -> dict[str, torch.Tensor]:
    """The input each named layer gets in a no-grad ``forward()`` (random draws in it do not reach the global RNG)."""
    modules = dict(model.named_modules())
    inputs: dict[str, torch.Tensor] = {}
    hooks = [modules[name].register_forward_pre_hook(lambda m, a, name=name: inputs.setdefault(name, a[0]))
             for name in names]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            forward()
    finally:
        for h in hooks:
            h.remove()
    return inputs
