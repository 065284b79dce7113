"""On a GPU, the training step replayed from a CUDA graph.

The lecture's model is far too small to fill a GPU: a step is some hundred kernel launches of a few
microseconds each, and the GPU waits for Python to queue them.  A CUDA graph records the step's kernels once
(forward, backward and Adam's update) and replays them with one launch: on an H100 the lecture's step ran 3.05x
faster at batch 50 and 1.85x at batch 100 (docs/cuda-graph-h100.json, written by benchmarks/cuda_graph.py),
and a prototype gained only 1.07x at batch 400, where the kernels themselves take the time.

What a replay needs, and how ``fit`` provides it:

- fixed tensors: each batch is copied into the graph's input; the loss comes back in its output tensor (read
  before the next replay overwrites it: both happen in the GPU's order);
- Adam with ``capturable=True`` (its step count lives on the GPU) and its learning rate in a GPU tensor that
  the schedule writes before each replay, so a one-cycle schedule needs no new recording (``adam``, ``set_lr``);
- a few eager steps first, on a side stream, as CUDA asks before a capture (``WARMUP_STEPS``; they are
  ordinary training steps);
- one batch shape: an epoch's smaller last batch runs eagerly, with the same optimizer.

It is used where nothing in the step asks the host or draws random numbers: one process, fp32, a model without
its own random objective (not the VAEs), no corruption on the CPU (``reason``).  ``AELAB_CUDA_GRAPHS=off`` runs
every step eagerly; what was used is recorded with the run (``History.step``).
"""

from __future__ import annotations

import os

import torch

ENV = "AELAB_CUDA_GRAPHS"
WARMUP_STEPS = 3


def reason_not(device: torch.device, model: torch.nn.Module, n_proc: int, corrupted: bool,
               precision: str) -> str | None:
    """Why the steps of this run cannot be replayed from a CUDA graph; None when they can."""
    if device.type != "cuda":
        return "not on a GPU"
    if os.environ.get(ENV, "on") == "off":
        return f"{ENV}=off"
    if n_proc > 1:
        return "several processes (DistributedDataParallel)"
    if corrupted:
        return "a restorer's batches are corrupted on the CPU"
    if hasattr(model, "loss"):
        return "the model's own objective draws random numbers"
    if precision != "fp32":
        return "bf16 autocast"
    return None


def adam(params, lr: float, device: torch.device, graphed: bool, beta2: float = 0.999) -> torch.optim.Adam:
    """Adam at ``lr`` (betas 0.9, ``beta2``); for a graphed step capturable, with its rate in a tensor on
    ``device``."""
    betas = (0.9, beta2)
    if graphed:
        return torch.optim.Adam(params, lr=torch.tensor(lr, device=device), betas=betas, capturable=True)
    return torch.optim.Adam(params, lr=lr, betas=betas)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The learning rate of the next step: written into the tensor a graph reads, or set as a number."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class GraphedStep:
    """``step(x) -> loss``: one training step of ``loss_fn(model, x)`` with ``optimizer``, replayed from a CUDA
    graph once ``WARMUP_STEPS`` eager steps have run; x: (B, C, H, W) on the GPU, B the batch of the recording."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.graph: torch.cuda.CUDAGraph | None = None
        self.input: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None
        self.shape: torch.Size | None = None  # the batch shape of the first step, the one recorded
        self.warmed = 0

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        loss = self.loss_fn(self.model, x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _record(self, x: torch.Tensor) -> None:
        self.input = x.clone()
        self.optimizer.zero_grad(set_to_none=True)  # the recorded backward allocates the gradients it reuses
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            loss = self.loss_fn(self.model, self.input)
            loss.backward()
            self.optimizer.step()
        self.loss = loss.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shape = self.shape or x.shape
        if x.shape != self.shape:  # an epoch's smaller last batch
            return self.eager(x)
        if self.graph is None and self.warmed < WARMUP_STEPS:
            # CUDA's rule: warm up on a side stream; waiting for it here keeps its tensors out of any race
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self.eager(x)
            torch.cuda.synchronize()
            self.warmed += 1
            return loss
        if self.graph is None:
            self._record(x)
        self.input.copy_(x)
        self.graph.replay()
        return self.loss
