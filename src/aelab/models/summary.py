"""The lecture's tensor-size table, with parameters and multiply-accumulates per layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LayerRow:
    name: str
    layer: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    params: int
    macs: int


def conv_macs(module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one sample through a (transposed) convolution, from first principles.

    Conv: every output element is an inner product of (C_in / groups) * prod(kernel) taps.
    Transposed conv: every *input* element scatters (C_out / groups) * prod(kernel) products.
    """
    k = 1
    for s in module.kernel_size:
        k *= s
    if isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d):
        n_in = 1
        for s in in_shape:
            n_in *= s
        return n_in * module.out_channels // module.groups * k
    n_out = 1
    for s in out_shape:
        n_out *= s
    return n_out * module.in_channels // module.groups * k


def layer_macs(module: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> int:
    """Convolutions: ``conv_macs``.  Bilinear interpolation: 4 multiply-accumulates per output element (the
    four neighbours' weights); nearest interpolation, pixel shuffle, padding and cropping only move values: 0."""
    if isinstance(module, nn.Upsample):
        n_out = 1
        for s in out_shape:
            n_out *= s
        return 4 * n_out if module.mode == "bilinear" else 0
    if isinstance(module, nn.Conv1d | nn.Conv2d | nn.ConvTranspose1d | nn.ConvTranspose2d):
        return conv_macs(module, in_shape, out_shape)
    return 0


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerRow]:
    """Run one zero sample of ``input_shape`` (C, H, W) through ``model`` and record every layer that changes
    a size: convolutions, transposed convolutions, interpolations, pixel shuffles, crops."""
    rows: list[LayerRow] = []
    hooks = []
    from aelab.models.decoders import SizeTo

    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv1d | nn.Conv2d | nn.ConvTranspose1d | nn.ConvTranspose2d | nn.Upsample
                      | nn.PixelShuffle | nn.ZeroPad2d | SizeTo):
            def hook(m, inp, out, name=name):
                i, o = tuple(inp[0].shape[1:]), tuple(out.shape[1:])
                rows.append(LayerRow(name, repr(m), i, o, sum(p.numel() for p in m.parameters()),
                                     layer_macs(m, i, o)))
            hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return rows


def format_table(rows: list[LayerRow]) -> str:
    shape = lambda s: "x".join(map(str, s))  # noqa: E731
    w = max(len(r.layer) for r in rows)
    lines = [f"{'layer':10s} {'operation':{w}s} {'in':>9s} -> {'out':9s} {'params':>8s} {'MACs':>12s}"]
    for r in rows:
        lines.append(f"{r.name:10s} {r.layer:{w}s} {shape(r.in_shape):>9s} -> {shape(r.out_shape):9s} "
                     f"{r.params:8,d} {r.macs:12,d}")
    lines.append(f"{'total':10s} {'':{w}s} {'':9s}    {'':9s} {sum(r.params for r in rows):8,d} "
                 f"{sum(r.macs for r in rows):12,d}")
    return "\n".join(lines)
