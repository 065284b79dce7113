"""Training in several processes under ``torchrun``: DistributedDataParallel, gloo on CPU, nccl on GPU.

    torchrun --standalone --nproc_per_node 2 -m aelab train --out runs/ddp ...

The global batch keeps its meaning: each of the W processes takes its 1/W share of every batch of
``train.batch_size`` (which W must divide), and DDP averages the gradients, which is the gradient of the
lecture's loss over the whole batch.  Every process sees the same data order (a function of seed and epoch);
process r draws its random numbers from the epoch's seed + r.  Rank 0 alone writes checkpoints, records and
metrics; the others wait for it at a barrier.  Outside torchrun (WORLD_SIZE unset or 1) nothing changes.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def requested() -> bool:
    """True when torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: torch.device) -> tuple[int, int]:
    """Join the process group that torchrun describes (once); returns (rank, world size)."""
    if requested() and not dist.is_initialized():
        import datetime

        # under `reproduce`, the other processes wait at a barrier while rank 0 runs a long evaluation stage
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=6))
    return world()


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum over all processes (identity in one process)."""
    if world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


class LossModule(torch.nn.Module):
    """Wraps a model so that DDP's forward is the training objective (``aelab.train.training_loss``): the
    gradient synchronisation then covers exactly what backward differentiates."""

    def __init__(self, model: torch.nn.Module, loss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.loss(self.model, *args)
