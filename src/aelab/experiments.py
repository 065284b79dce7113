"""The lecture's studies, one function each.  Each takes a config and a run folder, writes its outputs
(metrics, figures, run.json) there, and skips work whose result is already in the folder."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from aelab.data import Dataset, load, to_float
from aelab.evaluate import Judge, mnist_judge, reconstruct, scores
from aelab.figures import save_rows
from aelab.io import atomic_write_json, atomic_write_text
from aelab.models import LECTURE_SPEC, AutoEncoder, ConvSpec
from aelab.pca import PCA
from aelab.runs import record
from aelab.train import TrainConfig, fit


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist"
    n_train: int | None = None    # first n training images (None: all); tests and quick runs use fewer
    n_test: int | None = None


@dataclass(frozen=True)
class AEConfig:
    d: int = 8
    spec: tuple[ConvSpec, ...] = LECTURE_SPEC
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_splits(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    train, test = load(cfg.name, "train"), load(cfg.name, "test")
    return train.subset(cfg.n_train), test.subset(cfg.n_test)


def build_autoencoder(cfg: AEConfig, image_shape: tuple[int, int, int]) -> AutoEncoder:
    torch.manual_seed(cfg.train.seed)  # the initial weights are part of the seeded run
    return AutoEncoder(cfg.d, cfg.spec, in_channels=image_shape[0], image_size=image_shape[1:])


def judge_for(cfg: DataConfig, progress: bool = True) -> Judge | None:
    """The fixed classifier, for MNIST only (trained on the full official split, cached)."""
    if cfg.name != "mnist":
        return None
    return mnist_judge(load("mnist", "train"), load("mnist", "test"), progress=progress)


def train_autoencoder(cfg: AEConfig, run_dir: str | Path, *, resume: bool = True, progress: bool = True,
                      train: Dataset | None = None, test: Dataset | None = None,
                      judge: Judge | None = None) -> tuple[AutoEncoder, dict]:
    """Train one autoencoder into ``run_dir`` and score it; returns (model, metrics)."""
    run_dir = Path(run_dir)
    if train is None or test is None:
        train, test = load_splits(cfg.data)
    model = build_autoencoder(cfg, train.shape)
    data_hashes = {f"{cfg.data.name}/train": train.content_hash(), f"{cfg.data.name}/test": test.content_hash()}
    config = {**_jsonable(cfg), "spec": ",".join(map(str, model.spec))}  # the effective spec: last layer has d
    record(run_dir, config=config, seed=cfg.train.seed, data=data_hashes)
    history = fit(model, to_float(train.images), to_float(test.images), cfg.train, run_dir, resume=resume,
                  progress=progress, record={"config": config, "data": data_hashes})
    metrics = {**scores(model.cpu(), test, judge), "epochs": len(history.epochs),
               "train_seconds": sum(e["seconds"] for e in history.epochs), "history": history.epochs}
    atomic_write_json(run_dir / "metrics.json", metrics)
    return model, metrics


def _jsonable(cfg) -> dict:
    out = asdict(cfg)
    if "spec" in out:
        out["spec"] = ",".join(str(ConvSpec(**s)) for s in out["spec"])
    return out


# --------------------------------------------------------------------------- the d-sweep
@dataclass(frozen=True)
class SweepConfig:
    dims: tuple[int, ...] = (2, 4, 8, 16, 32)
    spec: tuple[ConvSpec, ...] = LECTURE_SPEC
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5))
    n_show: int = 36


def sweep(cfg: SweepConfig, out: str | Path, *, progress: bool = True) -> list[dict]:
    """CNN autoencoder vs PCA at every d: results.csv / results.md and one lecture figure per d.

    Interrupted sweeps resume: finished autoencoders are read back from their checkpoints.
    """
    out = Path(out)
    t_start = time.perf_counter()
    train, test = load_splits(cfg.data)
    judge = judge_for(cfg.data, progress)
    record(out, config=_jsonable(cfg), seed=cfg.train.seed,
           data={f"{cfg.data.name}/train": train.content_hash(), f"{cfg.data.name}/test": test.content_hash()})
    x_train, x_show = to_float(train.images), to_float(test.images[: cfg.n_show])
    rows = []
    for d in cfg.dims:
        pca = PCA(d, seed=cfg.train.seed).fit(x_train)
        pca_scores = scores(pca, test, judge)
        ae_cfg = AEConfig(d=d, spec=cfg.spec, data=cfg.data, train=cfg.train)
        model, ae_scores = train_autoencoder(ae_cfg, out / f"ae-d{d}", progress=progress, train=train, test=test,
                                             judge=judge)
        for name, s in (("CNN", ae_scores), ("PCA", pca_scores)):
            rows.append({"d": d, "model": name, **{k: v for k, v in s.items() if k != "history"}})
        save_rows(out / "figures" / f"reconstructions-d{d}.png", [
            ("X (original samples)", x_show),
            (f"g∘f(X) (CNN, d = {d})", reconstruct(model, x_show)),
            (f"g∘f(X) (PCA, d = {d})", reconstruct(pca, x_show)),
        ])
    write_results(out, rows, judge, seconds=time.perf_counter() - t_start)
    return rows


COLUMNS = ("d", "model", "mse", "loss", "psnr", "digit_kept", "epochs", "train_seconds")


def write_results(out: Path, rows: list[dict], judge: Judge | None, seconds: float) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[c for c in COLUMNS if any(c in r for r in rows)], extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    cols = [c for c in COLUMNS if any(c in r for r in rows)]
    fmt = {"mse": "{:.4f}", "loss": "{:.2f}", "psnr": "{:.2f}", "digit_kept": "{:.4f}", "train_seconds": "{:.0f}"}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(r[c]) if c in r else "" for c in cols) + " |")
    if judge is not None:
        lines.append(f"\ndigit_kept: share of the {rows and 'test'} reconstructions that the fixed classifier "
                     f"labels as the true digit; that classifier's own test accuracy is {judge.accuracy:.4f}.")
    lines.append(f"\nWall time of the whole sweep: {seconds:.0f} s.")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "results.json", {"rows": rows, "seconds": seconds,
                                             "classifier_accuracy": judge.accuracy if judge else None})


def with_train(cfg, **changes):
    """A copy of ``cfg`` whose TrainConfig has ``changes`` (epochs=..., lr=...)."""
    return replace(cfg, train=replace(cfg.train, **changes))


def load_results(out: str | Path) -> list[dict]:
    return json.loads((Path(out) / "results.json").read_text())["rows"]
