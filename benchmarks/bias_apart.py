"""Each transposed convolution of the lecture's decoder, forward + backward, with its bias in PyTorch's convolution
against its bias added apart (``aelab.kernels.BiasApartConvTranspose2d``), in bf16 autocast and in fp32.

    python benchmarks/bias_apart.py [--rounds 15] [--steps 20] [--threads 1] [--out docs/bias-apart.json]

Each layer of the default recipe's model (d = 8, batch 50, channels_last) on an input of its training shape (the
model's own forward on random images of MNIST's shape), its gradients those of a step (of the input, the
weight and the bias; ``torch.autograd.grad``, the weights' ``.grad`` left alone).  Each round times ``--steps``
calls of both ways, in an order that rotates (``run.interleaved``); reported per layer and precision: the
median ms of each way and the median and quartiles over rounds of fused / apart, and what ``kernels.choose``
measured and chose in the same process.  The encoder's Conv2d layers are left out: their bias costs nothing
in the convolution (about 1.0x either way in the session that added this).
"""

from __future__ import annotations

import statistics

import torch
from run import _write, interleaved, step_rounds_args

from aelab import kernels
from aelab.models import AutoEncoder
from aelab.recipe import autocast
from aelab.runs import environment
from aelab.train import training_loss

BATCH = 50


def layer_inputs(model: torch.nn.Module, x: torch.Tensor, precision: str) -> dict[str, torch.Tensor]:
    """The input of every ConvTranspose2d in a no-grad forward of x, in the training's precision."""
    inputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, args, out) -> None:  # a hook that returned something would replace the output
            inputs[name] = args[0].detach()
        return hook

    hooks = [m.register_forward_hook(keep(name)) for name, m in model.named_modules()
             if type(m) is torch.nn.ConvTranspose2d]
    with torch.no_grad(), autocast(x.device, precision):
        model(x)
    for h in hooks:
        h.remove()
    return inputs


def forward_backward(layer: torch.nn.Module, cls: type, x: torch.Tensor, precision: str, steps: int):
    """``steps`` forwards + backwards of ``layer`` computed as ``cls`` computes it."""
    x = x.detach().requires_grad_()
    wrt = [x, *layer.parameters()]

    def run():
        for _ in range(steps):
            with autocast(x.device, precision):
                y = cls.forward(layer, x)
            torch.autograd.grad(y, wrt, torch.ones_like(y))
    return run


def main() -> None:
    args = step_rounds_args(__doc__)
    torch.manual_seed(0)
    model = AutoEncoder(8).to(memory_format=torch.channels_last)
    x = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    result = {"environment": environment(), "threads": args.threads, "rounds": args.rounds, "steps": args.steps,
              "batch": BATCH, "precisions": {}}
    modules = dict(model.named_modules())
    for precision in ("bf16", "fp32"):
        inputs = layer_inputs(model, x, precision)
        chosen = kernels.choose(model, lambda: training_loss(model, x), precision)
        layers = {}
        for name, xin in inputs.items():
            if name in chosen["layers"]:
                continue  # computed by taps: no bias in a convolution
            m = modules[name]
            times = interleaved({"fused": forward_backward(m, type(m), xin, precision, args.steps),
                                 "apart": forward_backward(m, kernels.BiasApartConvTranspose2d, xin, precision,
                                                           args.steps)}, args.rounds)
            ratios = [a / b for a, b in zip(times["fused"], times["apart"], strict=True)]
            q = statistics.quantiles(ratios, n=4)
            layers[name] = {"input": list(xin.shape), "weight": list(m.weight.shape), "stride": list(m.stride),
                            "ms_fused": statistics.median(times["fused"]) / args.steps * 1e3,
                            "ms_apart": statistics.median(times["apart"]) / args.steps * 1e3,
                            "fused_over_apart": statistics.median(ratios), "quartiles": [q[0], q[2]]}
        result["precisions"][precision] = {"layers": layers, "choice": chosen}
    _write(result, args.out)


if __name__ == "__main__":
    main()
