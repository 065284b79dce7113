"""The lecture's studies, one function each.  Each takes a config and a run folder, writes its outputs
(metrics, figures, run.json) there, and skips work whose result is already in the folder."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from aelab.data import Dataset, load, to_float
from aelab.errors import ConfigError
from aelab.evaluate import Judge, mnist_judge, reconstruct, scores
from aelab.figures import save_rows
from aelab.io import atomic_write_json, atomic_write_text
from aelab.models import LECTURE_SPEC, MODELS, ConvSpec
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
    model: str = "ae"             # a key of aelab.models.MODELS: "ae" (the lecture's) or "vae"
    beta: float = 1.0             # VAE only: weight of the KL term (1: VAE, other: beta-VAE)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_splits(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    train, test = load(cfg.name, "train"), load(cfg.name, "test")
    return train.subset(cfg.n_train), test.subset(cfg.n_test)


def build_autoencoder(cfg: AEConfig, image_shape: tuple[int, int, int]) -> torch.nn.Module:
    if cfg.model not in MODELS:
        raise ConfigError(f"unknown model {cfg.model!r}; choose one of: {', '.join(MODELS)}")
    if cfg.model == "ae" and cfg.beta != 1.0:
        raise ConfigError("beta applies to --model vae only")
    options = {"beta": cfg.beta} if cfg.model == "vae" else {}
    torch.manual_seed(cfg.train.seed)  # the initial weights are part of the seeded run
    return MODELS[cfg.model](cfg.d, cfg.spec, in_channels=image_shape[0], image_size=image_shape[1:], **options)


def judge_for(cfg: DataConfig, progress: bool = True) -> Judge | None:
    """The fixed classifier, for MNIST only (trained on the full official split, cached)."""
    if cfg.name != "mnist":
        return None
    return mnist_judge(load("mnist", "train"), load("mnist", "test"), progress=progress)


def train_autoencoder(cfg: AEConfig, run_dir: str | Path, *, resume: bool = True, progress: bool = True,
                      train: Dataset | None = None, test: Dataset | None = None,
                      judge: Judge | None = None) -> tuple[torch.nn.Module, dict]:
    """Train one autoencoder into ``run_dir`` and score it; returns (model, metrics)."""
    run_dir = Path(run_dir)
    if train is None or test is None:
        train, test = load_splits(cfg.data)
    model = build_autoencoder(cfg, train.shape)
    data_hashes = {f"{cfg.data.name}/train": train.content_hash(), f"{cfg.data.name}/test": test.content_hash()}
    config = {**_jsonable(cfg), "spec": ",".join(map(str, model.spec))}  # the effective spec: last layer has d
    if not (resume and (run_dir / "run.json").exists()):  # a resumed run keeps the record of how it began
        record(run_dir, config=config, seed=cfg.train.seed, data=data_hashes)
    history = fit(model, to_float(train.images), to_float(test.images), cfg.train, run_dir, resume=resume,
                  progress=progress, record={"config": config, "data": data_hashes})
    metrics = {**scores(model.cpu(), test, judge), "epochs": len(history.epochs),
               "train_seconds": sum(e["seconds"] for e in history.epochs), "history": history.epochs}
    atomic_write_json(run_dir / "metrics.json", metrics)
    return model, metrics


def load_trained(run_dir: str | Path) -> tuple[torch.nn.Module, AEConfig]:
    """Rebuild the model of a finished ``aelab train`` run from its run.json and newest checkpoint."""
    from aelab.models import parse_spec
    from aelab.train import latest_checkpoint, load_model_weights

    run_dir = Path(run_dir)
    try:
        c = json.loads((run_dir / "run.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        raise ConfigError(f"{run_dir} is not an aelab training run (no readable run.json)") from None
    meta = latest_checkpoint(run_dir)
    if meta is None:
        raise ConfigError(f"{run_dir} has no complete checkpoint; train it first (aelab train --out {run_dir})")
    cfg = AEConfig(d=c["d"], spec=parse_spec(c["spec"]), model=c.get("model", "ae"), beta=c.get("beta", 1.0),
                   data=DataConfig(**c["data"]), train=TrainConfig(**c["train"]))
    train, _ = load_splits(replace(cfg.data, n_train=1))
    model = build_autoencoder(cfg, train.shape)
    return load_model_weights(meta, model).eval(), cfg


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


def write_table(out: Path, stem: str, rows: list[dict], columns: tuple[str, ...], fmt: dict[str, str],
                footer: str, **extra) -> None:
    """``stem``.csv, ``stem``.md (a markdown table with ``footer``) and ``stem``.json (rows + ``extra``)."""
    cols = [c for c in columns if any(c in r for r in rows)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(r[c]) if c in r else "" for c in cols) + " |")
    atomic_write_text(out / f"{stem}.md", "\n".join(lines) + "\n\n" + footer + "\n")
    atomic_write_json(out / f"{stem}.json", {"rows": rows, **extra})


def write_results(out: Path, rows: list[dict], judge: Judge | None, seconds: float) -> None:
    footer = (f"digit_kept: share of the test reconstructions that the fixed classifier labels as the true digit; "
              f"that classifier's own test accuracy is {judge.accuracy:.4f}.\n\n" if judge is not None else "")
    write_table(out, "results", rows, COLUMNS,
                {"mse": "{:.4f}", "loss": "{:.2f}", "psnr": "{:.2f}", "digit_kept": "{:.4f}",
                 "train_seconds": "{:.0f}"},
                footer + f"Wall time of the whole sweep: {seconds:.0f} s.", seconds=seconds,
                classifier_accuracy=judge.accuracy if judge else None)


def with_train(cfg, **changes):
    """A copy of ``cfg`` whose TrainConfig has ``changes`` (epochs=..., lr=...)."""
    return replace(cfg, train=replace(cfg.train, **changes))


# --------------------------------------------------------------------------- the latent space
@dataclass(frozen=True)
class LatentConfig:
    dims: tuple[int, ...] = (8, 16, 32)
    densities: tuple[str, ...] = ("diag", "full", "gmm", "flow")
    vaes: tuple[tuple[float, tuple[int, ...]], ...] = ((1.0, (8, 16, 32)), (4.0, (16,)))  # (beta, dims)
    spec: tuple[ConvSpec, ...] = LECTURE_SPEC
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    n_samples: int = 5000
    n_pairs: int = 6
    seed: int = 0


def model_dir(models: Path, kind: str, d: int, beta: float = 1.0) -> Path:
    """Where a study finds (or trains) its models: ae-d8, vae-d8, bvae4-d16, ..."""
    if kind == "ae":
        return models / f"ae-d{d}"
    return models / (f"vae-d{d}" if beta == 1.0 else f"bvae{beta:g}-d{d}")


def latent_study(cfg: LatentConfig, out: str | Path, models: str | Path | None = None, *,
                 progress: bool = True) -> list[dict]:
    """Interpolations, and samples from each density on each model, scored against the training set.

    models: folder holding ae-d{d} / vae-d{d} / bvae{beta}-d{d} runs (e.g. a sweep's); missing ones are
    trained there with ``cfg.train``.  Writes latent.csv / latent.md / latent.json and figures/.
    """
    from aelab.latent import decode_all, encode_all, interpolate, make_density, random_pairs
    from aelab.quality import Reference, sample_scores

    out = Path(out)
    models = Path(models) if models is not None else out
    t_start = time.perf_counter()
    train, test = load_splits(cfg.data)
    judge = judge_for(cfg.data, progress)
    if judge is None:
        raise ConfigError("the latent study scores samples with the MNIST classifier: use --dataset mnist")
    record(out, config=_jsonable(cfg), seed=cfg.seed,
           data={f"{cfg.data.name}/train": train.content_hash(), f"{cfg.data.name}/test": test.content_hash()})
    x_train, x_test = to_float(train.images), to_float(test.images)
    ref = Reference.build(judge, x_train)
    rows = [{"d": "-", "model": "test images", "density": "-", **sample_scores(ref, x_test[: cfg.n_samples])}]
    i0, i1 = random_pairs(len(x_test), cfg.n_pairs, cfg.seed)

    def sampled(codec, density, d, model_name, density_name, z_test=None):
        z = density.sample(cfg.n_samples, seed=cfg.seed)
        x = decode_all(codec, z)
        row = {"d": d, "model": model_name, "density": density_name, **sample_scores(ref, x)}
        if z_test is not None:
            row["test_loglik"] = float(density.log_prob(z_test).mean())
        if hasattr(density, "n_components_"):
            row["components"] = density.n_components_
        save_rows(out / "figures" / f"samples-d{d}-{model_name.lower().replace(' ', '')}-{density_name}.png",
                  [(f"{model_name} d = {d}, samples from {density_name}", x[:48])])
        return row, x[:24]

    for d in cfg.dims:
        ae_cfg = AEConfig(d=d, spec=cfg.spec, data=cfg.data, train=cfg.train)
        ae, _ = train_autoencoder(ae_cfg, model_dir(models, "ae", d), progress=progress, train=train, test=test,
                                  judge=judge)
        z_train, z_test = encode_all(ae, x_train), encode_all(ae, x_test)
        panels = []
        for name in cfg.densities:
            row, shown = sampled(ae, make_density(name, seed=cfg.seed).fit(z_train), d, "AE", name, z_test)
            rows.append(row)
            panels.append((f"AE d = {d}, {name}: FID {row['fid']:.1f}, confident {row['confident']:.2f}", shown))
        for beta, beta_dims in cfg.vaes:
            if d not in beta_dims:
                continue
            vae_cfg = AEConfig(d=d, spec=cfg.spec, model="vae", beta=beta, data=cfg.data, train=cfg.train)
            vae, _ = train_autoencoder(vae_cfg, model_dir(models, "vae", d, beta), progress=progress, train=train,
                                       test=test, judge=judge)
            label = "VAE" if beta == 1.0 else f"beta-VAE {beta:g}"
            prior = make_density("prior").fit(np.zeros((1, vae.latent_dim)))
            row, shown = sampled(vae, prior, d, label, "prior")
            rows.append(row)
            panels.append((f"{label} d = {d}, prior: FID {row['fid']:.1f}, confident {row['confident']:.2f}", shown))
            save_rows(out / "figures" / f"interpolation-{label.lower().replace(' ', '')}-d{d}.png",
                      [("", interpolate(vae, x_test[i0], x_test[i1]).flatten(0, 1))],
                      title=f"{label} interpolation (d = {d})")
        save_rows(out / "figures" / f"sampling-d{d}.png", panels, title=f"Sampling the latent space, d = {d}")
        save_rows(out / "figures" / f"interpolation-ae-d{d}.png",
                  [("", interpolate(ae, x_test[i0], x_test[i1]).flatten(0, 1))],
                  title=f"Autoencoder interpolation (d = {d})")
        pca = PCA(d, seed=cfg.seed).fit(x_train)
        save_rows(out / "figures" / f"interpolation-pca-d{d}.png",
                  [("", interpolate(pca, x_test[i0], x_test[i1]).flatten(0, 1))], title=f"PCA interpolation (d = {d})")
    write_latent_results(out, rows, judge, time.perf_counter() - t_start)
    return rows


LATENT_COLUMNS = ("d", "model", "density", "fid", "confident", "class_entropy", "nn_distance", "test_loglik",
                  "components")


def write_latent_results(out: Path, rows: list[dict], judge: Judge, seconds: float) -> None:
    write_table(out, "latent", rows, LATENT_COLUMNS,
                {"fid": "{:.2f}", "confident": "{:.3f}", "class_entropy": "{:.3f}", "nn_distance": "{:.3f}",
                 "test_loglik": "{:.2f}"},
                f"Scores by the fixed MNIST classifier (test accuracy {judge.accuracy:.4f}); "
                f"the 'test images' row is the floor. Wall time: {seconds:.0f} s.", seconds=seconds,
                classifier_accuracy=judge.accuracy)
