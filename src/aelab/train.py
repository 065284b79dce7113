"""Training, as on the lecture's slide:

    for epoch in range(nb_epochs):
        for input in train_input.split(batch_size):
            output = model.decode(model.encode(input))
            loss = 0.5 * (output - input).pow(2).sum() / input.size(0)
            optimizer.zero_grad(); loss.backward(); optimizer.step()

plus what a real run needs: a seeded shuffle per epoch, test evaluation after each epoch, an atomic
checkpoint per epoch (safetensors weights and optimizer state + a JSON record), ``resume``, and a
stop on a non-finite loss that keeps the last good checkpoint.

The trainer knows no dataset names: it takes float tensors (N, C, H, W) in [0, 1] and a run folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from aelab import AelabError, cudagraph, kernels, threads, timings
from aelab.config import TRAIN_BEFORE, ModelConfig, TrainConfig
from aelab.errors import ConfigError, warn
from aelab.io import atomic_save, atomic_write_json, sha256_file
from aelab.metrics import reconstruction_scores
from aelab.recipe import autocast, effective_lr, keep_freed_memory, lr_at
from aelab.runs import environment


class TrainingDiverged(AelabError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class History:
    """One record per finished epoch: train loss (the model's objective: the lecture's loss for an
    autoencoder, the negative ELBO for a VAE), test loss (the lecture's loss of g(f(x))), test MSE per
    pixel, and seconds."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    precision: dict[str, Any] = field(default_factory=dict)  # what ran, and why (``choose_precision``)
    allocator: dict[str, Any] = field(default_factory=dict)  # the C library's allocator (``keep_freed_memory``)
    step: dict[str, Any] = field(default_factory=dict)  # eager or replayed from a CUDA graph (``aelab.cudagraph``)
    kernels: dict[str, Any] = field(default_factory=dict)  # the layers run by taps, and why (``choose_kernels``)
    mean_image_mse: float | None = None  # test MSE of the mean training image given for every input (``COLLAPSED``)

    @property
    def last(self) -> dict[str, float]:
        return self.epochs[-1] if self.epochs else {}


def lecture_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 * sum over pixels of the squared error, averaged over the batch (the slide's loss)."""
    return 0.5 * (output - target).pow(2).sum() / target.size(0)


def resolve_device(name: str) -> torch.device:
    """auto: cuda when present (under torchrun: the process's own GPU, LOCAL_RANK), else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{os.environ['LOCAL_RANK']}"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise AelabError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AelabError("device 'cuda' requested but no GPU is available; use --device auto or cpu")
    return dev


def evaluate_loss(model: nn.Module, x: torch.Tensor, batch_size: int = 1000,
                  inputs: torch.Tensor | None = None) -> dict[str, float]:
    """Lecture loss per image and MSE per pixel of g(f(inputs)) against x: (N, C, H, W); inputs default to x
    (``metrics.reconstruction_scores``)."""
    s = reconstruction_scores(model, x, batch_size, inputs)
    return {"loss": s["loss"], "mse": s["mse"]}


def training_loss(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """The model's own objective when it defines one (a VAE's negative ELBO), else the lecture's loss.

    target: for restoration, the clean images that g(f(x)) of the corrupted x should give back."""
    if hasattr(model, "loss"):
        return model.loss(x)
    z = model.encode(x)
    output = model.decode(z)
    return lecture_loss(output, x if target is None else target)


# --------------------------------------------------------------------------- checkpoints
def _ckpt_paths(run_dir: Path, epoch: int) -> tuple[Path, Path]:
    stem = run_dir / "checkpoints" / f"epoch-{epoch:04d}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_checkpoint(run_dir: Path, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    record: dict[str, Any]) -> Path:
    """Weights + Adam state in safetensors (no pickle), then the JSON record naming the file's sha256."""
    weights, meta = _ckpt_paths(run_dir, epoch)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, state in opt["state"].items():
        for key, val in state.items():
            tensors[f"optim.{pid}.{key}"] = torch.as_tensor(val).detach().cpu().contiguous()
    atomic_save(weights, lambda tmp: save_file(tensors, str(tmp)))
    # a graphed step's learning rate is a GPU tensor (aelab.cudagraph): the record keeps its number
    groups = [{k: float(v) if isinstance(v, torch.Tensor) else v for k, v in g.items()} for g in opt["param_groups"]]
    atomic_write_json(meta, {**record, "epoch": epoch, "weights": weights.name, "sha256": sha256_file(weights),
                             "optimizer": {"param_groups": groups}})
    return meta


def _check_checkpoint(meta: Path) -> tuple[dict[str, Any] | None, str]:
    """(record, "") for an intact checkpoint, (None, why) for a damaged one."""
    try:
        rec = json.loads(meta.read_text())
        weights = meta.with_name(rec["weights"])
        expected = rec["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"its record is unreadable ({type(e).__name__})"
    if not weights.exists():
        return None, f"{weights.name} is missing"
    if sha256_file(weights) != expected:
        return None, f"{weights.name} does not match the sha256 in its record"
    return rec, ""


def latest_checkpoint(run_dir: Path, *, report: bool = False) -> Path | None:
    """The JSON record of the newest intact checkpoint (record readable and weights hash matching).

    report: say on stderr which newer checkpoints are damaged and skipped, and which one is used instead,
    so a run never falls back over finished epochs without a word.
    """
    damaged = []
    for meta in sorted(Path(run_dir, "checkpoints").glob("epoch-*.json"), reverse=True):
        rec, why = _check_checkpoint(meta)
        if rec is not None:
            if report and damaged:
                warn(f"skipping damaged checkpoint(s) {'; '.join(damaged)}; continuing from {meta} "
                     f"(epoch {rec.get('epoch')})")
            return meta
        damaged.append(f"{meta}: {why}")
    if report and damaged:
        warn(f"no intact checkpoint in {run_dir} ({'; '.join(damaged)}); training starts again from epoch 0")
    return None


def _load_tensors(weights: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything else (a pickle, say) is refused, never executed."""
    try:
        return load_file(str(weights))
    except Exception as e:  # safetensors raises its own SafetensorError, OSError or ValueError
        raise AelabError(f"checkpoint {weights} is not a readable safetensors file ({type(e).__name__}); aelab "
                         "never loads pickles: use a checkpoint written by aelab, or delete it") from None


def load_checkpoint(meta: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    meta = Path(meta)
    rec, why = _check_checkpoint(meta)
    if rec is None:
        raise AelabError(f"checkpoint {meta} is damaged: {why}; delete it (and its .safetensors) to fall back "
                         "to the previous epoch")
    weights = meta.with_name(rec["weights"])
    tensors = _load_tensors(weights)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise AelabError(f"checkpoint {weights} does not fit this model ({first}); resume with the same "
                         "model options (--d, --spec, --model) or train into another --out") from None
    if optimizer is not None:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, key = k.split(".", 2)
                state.setdefault(int(pid), {})[key] = v
        try:
            optimizer.load_state_dict({"state": state, "param_groups": _resumable_groups(
                rec["optimizer"]["param_groups"], optimizer)})
        except (KeyError, ValueError, TypeError) as e:
            raise AelabError(f"checkpoint {meta} has no usable optimizer state ({type(e).__name__}); it was not "
                             "written by aelab train: delete it or train into another --out") from None
    return rec


def _resumable_groups(saved: list[dict[str, Any]], optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The checkpoint's param groups as ``optimizer`` can take them: a run may resume on another device, or with
    or without a CUDA-graph step, so whether Adam is capturable, and whether its rate is a tensor, stay the
    optimizer's own (the rate's value is the checkpoint's)."""
    groups = []
    for old, now in zip(saved, optimizer.param_groups, strict=False):
        group = {**old, "capturable": now.get("capturable", False)}
        if isinstance(now["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(old["lr"]), device=now["lr"].device)
        groups.append(group)
    return groups


def load_model_weights(path: Path, model: nn.Module) -> nn.Module:
    """Load the model weights of a checkpoint (its .json record or .safetensors file) into ``model``."""
    path = Path(path)
    load_checkpoint(path if path.suffix == ".json" else path.with_suffix(".json"), model)
    return model


TEST_CORRUPTION_SEED = 10**6  # the fixed corruption of the test set (training batches use other seeds)

# Settings a resume may change without changing what the finished epochs mean (warm_epochs, cold_dims: how a study
# plans its trainings, not a setting of any one of them; the eval ones: only how the record's test scores are
# computed).
FREE_SETTINGS = ("eval_batch_size", "eval_subset", "warm_epochs", "cold_dims")
ALWAYS_RESUMABLE = ("epochs", *FREE_SETTINGS)


def check_resume(rec: dict[str, Any], cfg: TrainConfig, record: dict[str, Any], allow_change=()) -> list[str]:
    """The settings of ``cfg`` / ``record`` that differ from checkpoint ``rec``; refuses those not allowed.

    allow_change: train fields (``lr``, ``batch_size``, ``seed``, ...) the user explicitly lets change.
    Model and data must match: resuming them into another architecture or dataset is another experiment.
    """
    old, new = rec.get("train_config", {}), asdict(cfg)
    if old:  # a checkpoint written before a setting existed trained with that setting's value then
        old = {**TRAIN_BEFORE, **old}
    # with a one-cycle schedule the number of epochs sets every step's learning rate: not free to change
    free = ALWAYS_RESUMABLE if cfg.schedule == "constant" else FREE_SETTINGS
    changed = [k for k in new if k in old and old[k] != new[k] and k not in free]
    allowed = {a.removeprefix("train.") for a in allow_change}
    refused = [k for k in changed if k not in allowed]
    fixed = ("model", "data", "effective_spec", "corruption")
    before = {k: (rec.get("config") or {}).get(k) for k in fixed}
    now = {k: (record.get("config") or {}).get(k) for k in fixed}
    if isinstance(before["model"], dict) and isinstance(now["model"], dict):
        # a setting added since the checkpoint was written (model.init) had, then, the value its default has now
        defaults = asdict(ModelConfig())
        before["model"] = {**{k: v for k, v in defaults.items() if k not in before["model"]}, **before["model"]}
    differs = [k for k in before if before[k] is not None and now[k] is not None and before[k] != now[k]]
    if rec.get("data") and record.get("data") and rec["data"] != record["data"]:
        differs.append("data content (sha256)")
    if differs:
        raise ConfigError(f"the checkpoints in this run folder were made with another {', '.join(differs)}; "
                          "resume with the same --d/--spec/--model/--dataset/--n-train, or train into another --out")
    if refused:
        diffs = ", ".join(f"train.{k} {old[k]!r} -> {new[k]!r}" for k in refused)
        raise ConfigError(f"resuming with settings that differ from the checkpoint: {diffs}; pass "
                          f"--allow-change {','.join('train.' + k for k in refused)} to apply them, or train into "
                          "another --out")
    if cfg.epochs < rec.get("epoch", 0):
        raise ConfigError(f"the run already has {rec['epoch']} epochs, more than train.epochs = {cfg.epochs}; "
                          f"ask for more (--epochs {rec['epoch'] + 1}) or train into another --out")
    return changed


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random inside one epoch (a VAE's sampling noise, dropout): a function of
    (seed, epoch) only, so a run resumed at an epoch boundary continues bit for bit."""
    return seed * 1_000_003 + epoch * 7919 + 1


# --------------------------------------------------------------------------- the loop
def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The sample order of one epoch: a function of (seed, epoch) only, so a resumed run sees the same."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def fit(model: nn.Module, train_x: torch.Tensor, test_x: torch.Tensor, cfg: TrainConfig,
        run_dir: str | Path | None = None, *, resume: bool = False, progress: bool = True,
        record: dict[str, Any] | None = None, allow_change=(), corrupt=None,
        precision: dict[str, Any] | None = None, full_test_last: bool = True) -> History:
    """Train ``model`` (encode/decode) on train_x: (N, C, H, W) in [0, 1]; evaluate on test_x after the last
    epoch, and on its first ``cfg.eval_subset`` images after each earlier one (the record's ``test_images``).

    run_dir: where checkpoints go (none are written when None).  resume: continue from the newest
    complete checkpoint in run_dir.  record: extra JSON-able facts stored in every checkpoint
    (config, data hashes); a resume whose settings differ from the checkpoint's is refused unless the
    differing train fields are in ``allow_change`` (then the new values apply, e.g. a new learning rate).
    The caller seeds the initial weights; ``fit`` seeds the data order and, per epoch, the RNG of everything
    random inside the epoch (with ``torch.random.fork_rng``: the caller's global RNG is left untouched).
    corrupt: for a restoring autoencoder, ``corrupt(x, seed) -> x_tilde`` (``aelab.corruptions``); each batch
    is corrupted afresh with a seed of (seed, epoch, step), the loss compares g(f(x_tilde)) with the clean x,
    and the test set is corrupted once with a fixed seed.
    precision: for ``precision = "auto"``, a choice measured earlier (``history.precision`` of a run of the same
    model and batch on this machine) used instead of measuring again; a resumed run keeps its checkpoint's.
    The process keeps the memory it frees from then on (``aelab.recipe.keep_freed_memory``; history.allocator).
    full_test_last: False scores the last epoch too on the first ``cfg.eval_subset`` test images only, for a
    caller that scores the trained model on the whole test set itself (a study's sweep does, with the class
    kept); each epoch's ``test_images`` says how many were scored.
    """
    from aelab import distributed

    device = resolve_device(cfg.device)
    rank, n_proc = distributed.init_from_env(device)
    if cfg.batch_size % n_proc:
        raise ConfigError(f"train.batch_size = {cfg.batch_size} must be a multiple of the {n_proc} processes, so each "
                          "takes an equal share of every batch")
    allocator = keep_freed_memory()  # before the precision measurement, which it speeds up like every step
    fmt = torch.channels_last if cfg.channels_last and device.type == "cpu" else torch.contiguous_format
    model.to(device).to(memory_format=fmt)
    if device.type == "cuda":
        # fp32 means fp32: cuDNN would otherwise run fp32 convolutions in TF32 (a 10-bit mantissa); the fast
        # lower precision is bf16, chosen explicitly by the precision policy
        torch.backends.cudnn.allow_tf32 = False
    # on a GPU the training images live there once (a 60000-image float set is 188 MB), not copied every step;
    # a restorer corrupts batches on the CPU (its corruptions draw from seeded CPU generators)
    resident = train_x.to(device) if device.type == "cuda" and corrupt is None else train_x
    peak = effective_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling)
    history = History()
    if precision is not None and precision.get("precision") not in ("fp32", "bf16"):
        raise ConfigError(f"a precision choice names fp32 or bf16, got {precision.get('precision')!r}")
    if cfg.precision != "auto":
        precision = None  # a configured precision is not measured, and no choice given replaces it
    start, meta = 0, None
    run_dir = Path(run_dir) if run_dir is not None else None
    if resume:
        if run_dir is None:
            raise AelabError("resume needs a run folder")
        meta = latest_checkpoint(run_dir, report=True)
        if meta is not None:
            rec = json.loads(meta.read_text())
            check_resume(rec, cfg, record or {}, allow_change)  # before loading
            if cfg.precision == "auto" and (rec.get("precision") or {}).get("precision") in ("fp32", "bf16"):
                precision = rec["precision"]  # a resumed run keeps the precision it was measured to need
    if precision is None:
        precision = choose_precision(model, train_x, cfg, device, fmt, n_proc)
    if meta is not None and cfg.kernels == "auto":  # a resumed run computes its layers as the run before it did
        kernel_choice = resumed_kernels(rec, model, device, precision["precision"])  # rec: the checkpoint's JSON
    else:
        kernel_choice = choose_kernels(model, train_x, cfg, device, fmt, n_proc, precision["precision"])
    not_graphed = cudagraph.reason_not(device, model, n_proc, corrupt is not None, precision["precision"])
    optimizer = cudagraph.adam(model.parameters(), peak, device, graphed=not_graphed is None,
                                beta2=cfg.adam_beta2)
    if meta is not None:
        rec = load_checkpoint(meta, model, optimizer)
        model.to(memory_format=fmt)
        history.epochs = rec["history"]
        start = rec["epoch"]
    history.precision, history.allocator, history.kernels = precision, allocator, kernel_choice
    history.step = ({"step": "CUDA graph", "reason": "replayed after a few eager steps (aelab.cudagraph)"}
                    if not_graphed is None else {"step": "eager", "reason": not_graphed})
    record = {"train_config": asdict(cfg), **(record or {}), "environment": environment(), "processes": n_proc,
              "precision": precision, "allocator": allocator, "kernels": kernel_choice, "step": history.step}
    devices = [device.index or 0] if device.type == "cuda" else []
    step_model = None
    if n_proc > 1:  # DDP averages the gradients of the processes' shares of each batch
        from torch.nn.parallel import DistributedDataParallel

        step_model = DistributedDataParallel(distributed.LossModule(model, training_loss))
    progress = progress and rank == 0
    test_in = corrupt(test_x, TEST_CORRUPTION_SEED) if corrupt is not None else None

    steps_per_epoch = math.ceil(len(train_x) / cfg.batch_size)
    # the closed-form baseline of any reconstruction: the best constant image, the training mean, for every input
    train_mean = train_x.mean(0, keepdim=True)
    history.mean_image_mse = float((train_mean - test_x).pow(2).mean())
    subset_mean_image_mse = float((train_mean - test_x[:cfg.eval_subset]).pow(2).mean())  # epochs before the last

    def lr_of(epoch: int, step: int) -> float:
        return lr_at(peak, cfg.schedule, epoch * steps_per_epoch + step, cfg.epochs * steps_per_epoch, cfg.warmup)

    # one graph for the whole run: recorded in the first epoch trained, replayed in every later one
    step_fn = cudagraph.GraphedStep(model, optimizer, training_loss) if not_graphed is None else None
    model.train()
    # back to plain layers however it ends
    with kernels.use(model, kernel_choice["layers"], kernel_choice.get("fp32_layers", []),
                     kernel_choice.get("bias_apart", [])):
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            # the order sits beside the images: indexing GPU images with a CPU index would copy it across, and wait
            # for the GPU, at every step
            order = epoch_order(len(train_x), cfg.seed, epoch, cfg.shuffle).to(resident.device)
            bar = tqdm(order.split(cfg.batch_size), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                       leave=False, unit="batch")
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(epoch_seed(cfg.seed, epoch) + rank)
                running, seen = _train_epoch(model, optimizer, resident, bar, device, fmt, epoch, run_dir, step_model,
                                             corrupt, epoch_seed(cfg.seed, epoch), lr_of, precision["precision"],
                                             step_fn)
            running, seen = distributed.all_sum([running, seen])
            # the whole test set after the last epoch; before it, the first eval_subset images only: a curve to
            # watch and the collapse check, for a fifth of the cost (docs/benchmarks.md, "The per-epoch test score")
            n = None if epoch + 1 == cfg.epochs and full_test_last else cfg.eval_subset
            xs, ins = test_x[:n], None if test_in is None else test_in[:n]
            test = evaluate_loss(model, xs, cfg.eval_batch_size, ins)
            history.epochs.append({"epoch": epoch + 1, "train_loss": running / seen, "test_loss": test["loss"],
                                   "test_mse": test["mse"], "test_images": len(xs),
                                   "seconds": time.perf_counter() - t0})
            baseline = history.mean_image_mse if n is None else subset_mean_image_mse
            if rank == 0 and test["mse"] >= COLLAPSED * baseline:
                warn(collapse_message(epoch + 1, test["mse"], baseline, cfg))
            if progress:
                e = history.last
                on = f" (first {len(xs)} test images)" if len(xs) < len(test_x) else ""
                tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: train loss {e['train_loss']:.3f}  test loss "
                           f"{e['test_loss']:.3f}  test mse {e['test_mse']:.5f}{on}  ({e['seconds']:.0f} s)")
            if run_dir is not None and rank == 0:
                save_checkpoint(run_dir, epoch + 1, model, optimizer, {**record, "history": history.epochs})
            distributed.barrier()  # the others wait until rank 0's checkpoint is complete
    model.to(memory_format=torch.contiguous_format)
    return history


COLLAPSED = 0.9  # a test MSE at least this share of the mean image's: about the same picture for every input


def collapse_message(epoch: int, mse: float, mean_image_mse: float, cfg: TrainConfig) -> str:
    """What to tell the user when a model reconstructs every image as about the same picture: the mean image, which
    a network whose output hardly depends on its input gives (the lecture's model from PyTorch's initial weights,
    in short runs: docs/benchmarks.md, "Short runs"), or a model that has barely started to learn."""
    return (f"epoch {epoch}: test MSE {mse:.4f} is {mse / mean_image_mse:.0%} of the mean training image's "
            f"({mean_image_mse:.4f}): the model gives about the same picture for every input (collapsed, or barely "
            f"trained); if it stays there, train again for more epochs, from He et al.'s initial weights if it "
            f"started from PyTorch's (--set model.init=kaiming), or with a lower learning rate than train.lr = "
            f"{cfg.lr:g}")


def choose_precision(model, train_x, cfg: TrainConfig, device, fmt, n_proc: int) -> dict:
    """The precision of this run: as configured, or for "auto" fp32 on a CPU known to lack native bf16 and
    otherwise measured on one batch (``aelab.recipe``), once per machine (``aelab.timings``); under torchrun bf16
    only when every process measured it faster."""
    if cfg.precision != "auto":
        return {"precision": cfg.precision, "reason": "set by train.precision"}
    from aelab import distributed, recipe

    if recipe.native_bf16(device) is False:
        choice = {"precision": "fp32", "reason": "no native bf16 on this CPU (x86-64 without avx512_bf16 or AMX, "
                                                 "as torch.cpu reports): fp32, bf16 not measured"}
    else:
        x = train_x[: cfg.batch_size // n_proc].to(device).contiguous(memory_format=fmt)
        choice = timings.kept(precision_key(model, x, device),
                              lambda: recipe.measure_precision(model, training_loss, x, device))
    votes = distributed.all_sum([1.0 if choice["precision"] == "bf16" else 0.0])[0]
    if choice["precision"] == "bf16" and votes < n_proc:
        choice = {**choice, "precision": "fp32", "reason": choice["reason"] + "; not on every process: fp32"}
    return choice


def precision_key(model, x: torch.Tensor, device: torch.device) -> str:
    """The key under which ``aelab.timings`` keeps a precision measurement: the model's layers (a hash of its
    printed form), the batch and its layout, the device (a GPU by name) and the thread count."""
    layers = hashlib.sha256(repr(model).encode()).hexdigest()[:16]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    shape, _, layout = timings.tensor(x)
    return timings.key("precision", type(model).__name__, layers, shape, layout, name, torch.get_num_threads())


def choose_kernels(model, train_x, cfg: TrainConfig, device, fmt, n_proc: int, precision: str) -> dict:
    """The layers this run computes by taps, and in fp32 under bf16 autocast (``aelab.kernels``): as train.kernels
    says, measured on one batch for "auto"; under torchrun only the layers every process chose, so that all of
    them compute the same thing."""
    from aelab import distributed

    x = train_x[: cfg.batch_size // n_proc].to(device).contiguous(memory_format=fmt)
    choice = kernels.choose(model, lambda: training_loss(model, x), precision, cfg.kernels)
    names = [name for name, m in model.named_modules() if type(m) in kernels.FP32]
    if names:  # every process has the same layers, so every one takes part in these sums
        for key in ("layers", "fp32_layers", "bias_apart"):
            votes = distributed.all_sum([1.0 if name in choice[key] else 0.0 for name in names])
            agreed = [name for name, v in zip(names, votes, strict=True) if v == n_proc]
            if agreed != choice[key]:
                choice = {**choice, key: agreed, "reason": choice["reason"] + f"; {key}: only those every process "
                                                                               "chose"}
    return choice


def resumed_kernels(rec: dict, model, device: torch.device, precision: str) -> dict:
    """The layers a checkpoint's run computed by taps and in fp32 (``rec``: its JSON record), for the run that
    resumes it (none off a CPU, as when a run from a CPU is resumed on a GPU)."""
    none = {"layers": [], "fp32_layers": [], "bias_apart": []}
    if "kernels" not in rec:
        return {**none, "reason": "resumed from a checkpoint written before aelab.kernels: PyTorch's kernels"}
    if device.type != "cpu":
        return {**none, "reason": f"resumed on {device.type} in {precision}: PyTorch's kernels"}
    modules = dict(model.named_modules())
    # a checkpoint written before the bias apart has no "bias_apart": its layers computed the bias in the convolution
    return {**rec["kernels"], **{key: [name for name in rec["kernels"].get(key, []) if name in modules]
                                 for key in none}}


LOSS_CHECK_EVERY = 50  # steps between reads of the loss on the host (a GPU synchronisation each)


def _train_epoch(model, optimizer, train_x, batches, device, fmt, epoch, run_dir, step_model=None, corrupt=None,
                 seed: int = 0, lr_of=None, precision: str = "fp32", step_fn=None) -> tuple[float, int]:
    """One pass over ``batches`` (index tensors); returns (sum of loss x batch size, samples seen).

    step_model: the DDP-wrapped objective when several processes train; each then takes its share of a batch.
    lr_of(epoch, step): the learning rate of each step (``aelab.recipe.lr_at``); precision: fp32 or bf16.
    step_fn(x) -> loss: the whole step (a ``aelab.cudagraph.GraphedStep``) in place of the eager one below.

    The loss is summed where it was computed and read back every ``LOSS_CHECK_EVERY`` steps and at the end:
    reading it every step made a GPU wait for each step to finish before queueing the next (0.80x the lecture
    loop on an H200).  A non-finite loss therefore stops the run up to that many steps late; the weights in
    memory are then spoiled, the checkpoints on disk are not.
    """
    from aelab import distributed

    rank, n_proc = distributed.world()
    running = torch.zeros((), dtype=torch.float64, device=device)  # sum of loss x batch size, on the device
    seen = 0
    for step, idx in enumerate(batches):
        if n_proc > 1:
            if len(idx) < n_proc:
                continue  # a last batch smaller than the number of processes: skipped by all of them
            idx = idx.tensor_split(n_proc)[rank]
        x = train_x[idx].to(device, non_blocking=True).contiguous(memory_format=fmt)
        args = (x,)
        if corrupt is not None:  # (corrupted input, clean target), corrupted afresh for every batch
            noisy = corrupt(train_x[idx], seed * 100_003 + step)
            args = (noisy.to(device, non_blocking=True).contiguous(memory_format=fmt), x)
        if lr_of is not None:
            cudagraph.set_lr(optimizer, lr_of(epoch, step))
        if step_fn is not None:
            loss = step_fn(x)
        else:
            with autocast(device, precision):
                loss = step_model(*args) if step_model is not None else training_loss(model, *args)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        running += loss.detach().double() * len(idx)
        seen += len(idx)
        if (step + 1) % LOSS_CHECK_EVERY == 0:
            batches.set_postfix(loss=f"{_check_loss(running, seen, epoch, step, run_dir):.3f}")
            threads.follow()  # beside other stages (reproduce --jobs): this process's share of the threads now
    _check_loss(running, seen, epoch, step, run_dir)
    return running.item(), seen


def _check_loss(running: torch.Tensor, seen: int, epoch: int, step: int, run_dir) -> float:
    """The mean training loss so far in this epoch (on every process: all stop together when one diverges)."""
    from aelab import distributed

    total, count = distributed.all_sum([running.item(), float(seen)])  # the identity in one process
    mean = total / count
    if not math.isfinite(mean):
        last = latest_checkpoint(run_dir) if run_dir else None
        raise TrainingDiverged(f"loss became {mean} at epoch {epoch + 1}, by step {step}; "
                               f"last good checkpoint: {last or 'none'}; lower the learning rate")
    return mean
