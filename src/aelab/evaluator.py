"""The fixed classifier of each labelled dataset: the yardstick of "class kept" and of FID in its features.

Reconstructions and samples are judged by a classifier that never changes between runs or machines:
for MNIST and Fashion-MNIST its weights ship with the package (``aelab/evaluators/<name>.safetensors``
beside a JSON record with the file's sha256, checked at load, and the recipe that made it, which
``aelab evaluator train`` reproduces).  Any other labelled dataset (an ``images`` folder with class
sub-folders, an IDX folder) gets one trained with the same recipe once and cached under its data hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from aelab import AelabError
from aelab.data import Dataset, cache, to_float
from aelab.io import atomic_save, atomic_write_json, sha256_file
from aelab.metrics import inference_batch
from aelab.models.classifier import DigitClassifier

VERSION = "digitcnn-v2"
SHIPPED_DIR = Path(__file__).parent / "evaluators"
# Below this test accuracy a freshly trained evaluator is refused: its class-kept scores would mislead.
MIN_ACCURACY = {"mnist": 0.99, "fashion-mnist": 0.90}


@dataclass(frozen=True)
class Judge:
    """The fixed classifier plus its measured test accuracy."""

    model: DigitClassifier
    accuracy: float
    source: str = ""

    def __post_init__(self):
        # channels_last (in place), as aelab trains and scores its autoencoders: oneDNN's fast layout on the CPU;
        # the features agree with the contiguous layout to 1e-5 (docs/benchmarks.md: the sweep 1.40x faster)
        self.model.to(memory_format=torch.channels_last)

    def batches(self, x: torch.Tensor, batch_size: int | None = None):
        """x: (N, C, H, W) as the classifier takes it: clipped to [0, 1], channels_last, in batches
        (``metrics.inference_batch`` unless given)."""
        batch_size = batch_size or inference_batch(torch.device("cpu"), x[0].numel())
        for xb in x.float().split(batch_size):
            yield xb.clamp(0, 1).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Class probabilities (N, K) of x: (N, C, H, W) in [0, 1] (values are clipped to [0, 1] first)."""
        self.model.eval()
        return torch.cat([self.model(xb).softmax(1) for xb in self.batches(x, batch_size)])

    def class_kept(self, x_hat: torch.Tensor, labels: np.ndarray) -> float:
        """Share of x_hat: (N, C, H, W) that the classifier labels as ``labels``: (N,)."""
        return float((self.predict(x_hat).argmax(1).numpy() == labels).mean())


def border_share(images: np.ndarray, width: int = 2) -> float:
    """Share of the total intensity that lies in the outer ``width`` pixels of images (N, C, H, W)."""
    x = images.astype(np.float64)
    inner = x[:, :, width:-width, width:-width].sum()
    total = x.sum()
    return float((total - inner) / total) if total else 0.0


def max_shift_for(train: Dataset) -> int:
    """2 when the border is (nearly) empty, as on MNIST: rolling then moves the object without cutting or
    wrapping it; 0 otherwise (Fashion-MNIST's objects fill the frame, and wrapped shifts cost accuracy)."""
    return 2 if border_share(train.images) < 0.01 else 0


def train_classifier(train: Dataset, test: Dataset, *, epochs: int = 6, seed: int = 0, batch_size: int = 128,
                     progress: bool = True) -> Judge:
    """The recipe: Adam (lr 1e-3, x 0.7 per epoch), batch 128, a fixed seed, and random shifts of up to
    ``max_shift_for(train)`` pixels per batch.  The global RNG is left untouched (a forked RNG seeds the
    initial weights and each step's dropout)."""
    shift = max_shift_for(train)
    n_classes = int(max(train.labels.max(), test.labels.max())) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitClassifier(n_classes, in_channels=train.shape[0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.7)
    x, y = to_float(train.images), torch.from_numpy(train.labels)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        for idx in tqdm(torch.randperm(len(x), generator=gen).split(batch_size), desc=f"classifier {epoch + 1}",
                        disable=not progress, leave=False):
            dy, dx = torch.randint(-shift, shift + 1, (2,), generator=gen).tolist()
            with torch.random.fork_rng(devices=[]):  # dropout's noise: seeded per step, global RNG untouched
                torch.manual_seed(seed * 1_000_003 + int(idx[0]))
                loss = nn.functional.cross_entropy(model(x[idx].roll((dy, dx), (2, 3))), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
        sched.step()
    judge = Judge(model.eval(), 0.0)
    acc = judge.class_kept(to_float(test.images), test.labels)
    return Judge(judge.model, acc, "trained now")


def save_judge(judge: Judge, weights: Path, record: dict) -> None:
    """Weights (safetensors) then the JSON record naming their sha256: the record is the commit."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in judge.model.state_dict().items()}  # safetensors: row-major
    atomic_save(weights, lambda tmp: save_file(state, str(tmp)))
    atomic_write_json(weights.with_suffix(".json"), {**record, "version": VERSION, "test_accuracy": judge.accuracy,
                                                     "sha256": sha256_file(weights)})


def load_judge(weights: Path) -> Judge:
    """Load a saved evaluator, refusing a file whose sha256 differs from its record."""
    from safetensors.torch import load_file

    meta = weights.with_suffix(".json")
    try:
        rec = json.loads(meta.read_text())
        expected, n_classes, channels = rec["sha256"], rec["n_classes"], rec["channels"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AelabError(f"evaluator record {meta} is unreadable ({e}); delete it and {weights.name} to retrain, "
                         "or reinstall aelab for a shipped one") from None
    if not weights.exists() or sha256_file(weights) != expected:
        raise AelabError(f"evaluator weights {weights} are missing or damaged (sha256 differs from {meta.name}); "
                         "delete both to retrain, or reinstall aelab for a shipped one")
    model = DigitClassifier(n_classes, in_channels=channels)
    model.load_state_dict(load_file(str(weights)))
    return Judge(model.eval(), float(rec["test_accuracy"]), str(weights))


def shipped_path(name: str) -> Path:
    return SHIPPED_DIR / f"{name}.safetensors"


def has_labels(train: Dataset) -> bool:
    return len(np.unique(train.labels)) > 1


def judge_for(train: Dataset, test: Dataset, *, progress: bool = True) -> Judge | None:
    """The fixed classifier for this dataset (full official splits); None when it has no class labels.

    MNIST / Fashion-MNIST whose content matches the shipped record: the shipped weights.  Anything else:
    trained once with ``train_classifier`` and cached under the data's hashes (``$AELAB_CACHE/evaluators``).
    """
    if not has_labels(train):
        return None
    shipped = shipped_path(train.name)
    if shipped.with_suffix(".json").exists():
        rec = json.loads(shipped.with_suffix(".json").read_text())
        if rec.get("test_sha256") == test.content_hash() and rec.get("train_sha256") == train.content_hash():
            return load_judge(shipped)
    key = f"{VERSION}-{train.name}-{train.content_hash()[:16]}-{test.content_hash()[:16]}"
    weights = cache.cache_dir() / "evaluators" / f"{key}.safetensors"
    with cache.locked(f"evaluator-{key}"):
        if weights.with_suffix(".json").exists():
            return load_judge(weights)
        judge = train_evaluator(train, test, weights, progress=progress)
    return judge


def train_evaluator(train: Dataset, test: Dataset, weights: Path, *, progress: bool = True) -> Judge:
    """Train with the fixed recipe, check its accuracy, save it with its record (``aelab evaluator train``)."""
    judge = train_classifier(train, test, progress=progress)
    floor = MIN_ACCURACY.get(train.name, 0.0)
    if judge.accuracy < floor:
        raise AelabError(f"the {train.name} evaluator reached only {judge.accuracy:.4f} test accuracy (< {floor}); "
                         "its class-kept scores would not be trustworthy")
    save_judge(judge, weights, {"dataset": train.name, "seed": 0, "recipe": "aelab.evaluator.train_classifier "
                                f"(6 epochs, Adam 1e-3 x 0.7/epoch, batch 128, shifts <= {max_shift_for(train)} px)",
                                "n_classes": int(judge.model.head[-1].out_features),
                                "channels": int(train.shape[0]), "image_size": list(train.shape[1:]),
                                "train_sha256": train.content_hash(), "test_sha256": test.content_hash()})
    return load_judge(weights)
