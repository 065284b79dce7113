"""The encoder's first layer (``Conv2d(1, 32, 5)`` on the image's one channel, which oneDNN handles poorly in the
decoder's last layer) computed by PyTorch's convolution against a matrix product of the image's 5x5 patches with
the kernel, in fp32 and in bf16 autocast: is it worth the taps' treatment that ``aelab.kernels`` gives decoder.8?

    python benchmarks/first_layer.py [--rounds 15] [--steps 20] [--threads 2] [--out docs/first-layer.json]

The patches are a strided view of the image, (N, 24, 24, 5, 5), copied into (N * 576, 25); one ``addmm`` with
the (25, 32) kernel and the bias gives (N * 576, 32), which is the output in channels_last memory already, and
autograd gives the weight's and the bias's gradients (the image needs none).  Batch 50 (the default recipe's),
channels_last, random images of MNIST's shape; forward + backward per call, each round times ``--steps`` calls of
both ways in an order that rotates (``run.interleaved``): the median ms of each way, and the median and quartiles
over rounds of torch / patches.  The two outputs are compared first (the largest difference is reported).
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from run import _write, interleaved, ratio, ratio_quartiles, step_rounds_args

from aelab.recipe import autocast
from aelab.runs import environment

BATCH = 50


def by_patches(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv2d(x, weight, bias) for one input channel, stride 1, no padding. x: (N, 1, H, W), weight: (C, 1, k, k),
    bias: (C,) -> (N, C, H - k + 1, W - k + 1) in channels_last memory."""
    n, _, h, w = x.shape
    c, k = weight.shape[0], weight.shape[-1]
    ho, wo = h - k + 1, w - k + 1
    patches = x.contiguous().as_strided((n, ho, wo, k, k), (h * w, w, 1, w, 1)).reshape(n * ho * wo, k * k)
    out = torch.addmm(bias, patches, weight.reshape(c, k * k).t())
    return out.view(n, ho, wo, c).permute(0, 3, 1, 2)


def forward_backward(way, x: torch.Tensor, layer: torch.nn.Conv2d, precision: str, steps: int):
    wrt = [layer.weight, layer.bias]

    def run():
        for _ in range(steps):
            with autocast(x.device, precision):
                y = way(x, layer.weight, layer.bias)
            torch.autograd.grad(y, wrt, torch.ones_like(y))
    return run


def main() -> None:
    args = step_rounds_args(__doc__)
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(1, 32, 5).to(memory_format=torch.channels_last)
    x = torch.rand(BATCH, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    result = {"environment": environment(), "threads": args.threads, "rounds": args.rounds, "steps": args.steps,
              "batch": BATCH, "precisions": {}}
    for precision in ("fp32", "bf16"):
        with torch.no_grad(), autocast(x.device, precision):
            difference = (F.conv2d(x, layer.weight, layer.bias).float()
                          - by_patches(x, layer.weight, layer.bias).float()).abs().max().item()
        times = interleaved({"torch": forward_backward(F.conv2d, x, layer, precision, args.steps),
                             "patches": forward_backward(by_patches, x, layer, precision, args.steps)}, args.rounds)
        q = ratio_quartiles(times["torch"], times["patches"])
        result["precisions"][precision] = {
            "max_difference": difference,
            "ms_torch": statistics.median(times["torch"]) / args.steps * 1e3,
            "ms_patches": statistics.median(times["patches"]) / args.steps * 1e3,
            "torch_over_patches": ratio(times["torch"], times["patches"]), "quartiles": [q[0], q[2]]}
    _write(result, args.out)


if __name__ == "__main__":
    main()
