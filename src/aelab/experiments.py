"""The lecture's studies as plain functions: data and models in, rows and figures out.

Nothing here decides what is cached or where: ``aelab.pipeline`` wires these functions into stages, and
the CLI calls them directly for one-off jobs (``train``, ``interpolate``, ``sample``).  Every figure
function returns a ``Figure`` entry (file, caption) that the report shows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aelab.config import DataConfig, LatentConfig, ModelConfig, TrainConfig, build_section, to_dict
from aelab.data import Dataset, load, to_float
from aelab.errors import ConfigError
from aelab.evaluator import Judge
from aelab.figures import save_rows
from aelab.io import atomic_write_json, atomic_write_text
from aelab.metrics import Codec, reconstruct, scores
from aelab.models import MODELS, kaiming_init_
from aelab.pca import PCA
from aelab.runs import record
from aelab.train import fit, latest_checkpoint, load_model_weights


@dataclass(frozen=True)
class Figure:
    """A figure for the report: its file (relative to the stage folder) and a caption with its numbers."""

    file: str
    caption: str


# --------------------------------------------------------------------------- data and models
def load_full(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    """The dataset's full official train and test splits."""
    return (load(cfg.name, "train", data_dir=cfg.data_dir), load(cfg.name, "test", data_dir=cfg.data_dir))


def load_splits(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    """The splits a study uses: the first ``n_train`` / ``n_test`` images (all when None)."""
    train, test = load_full(cfg)
    return train.subset(cfg.n_train), test.subset(cfg.n_test)


def data_hashes(cfg: DataConfig, train: Dataset, test: Dataset) -> dict[str, str]:
    return {f"{cfg.name}/train": train.content_hash(), f"{cfg.name}/test": test.content_hash()}


def build_model(cfg: ModelConfig, image_shape: tuple[int, int, int], seed: int) -> torch.nn.Module:
    """The model of ``cfg`` for images (C, H, W), its initial weights drawn from ``seed`` (global RNG untouched) as
    ``cfg.init`` says (``aelab.models.kaiming_init_``, or PyTorch's default)."""
    options = {"beta": cfg.beta, "decoder": cfg.decoder} if cfg.kind == "vae" else {"decoder": cfg.decoder}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MODELS[cfg.kind](cfg.d, cfg.layers, in_channels=image_shape[0], image_size=image_shape[1:], **options)
        return kaiming_init_(model) if cfg.init == "kaiming" else model


def model_label(cfg: ModelConfig) -> str:
    """'AE', 'VAE' or 'beta-VAE 4' (table rows and captions)."""
    if cfg.kind == "ae":
        return "AE"
    return "VAE" if cfg.beta == 1.0 else f"beta-VAE {cfg.beta:g}"


def train_model(model_cfg: ModelConfig, train_cfg: TrainConfig, data_cfg: DataConfig, train: Dataset,
                test: Dataset, run_dir: str | Path, *, resume: bool = True, progress: bool = True,
                allow_change=(), corrupt=None, warm: tuple[str, torch.nn.Module] | None = None,
                full_test_last: bool = True) -> tuple[torch.nn.Module, list[dict]]:
    """Train one model into ``run_dir`` (run.json, a checkpoint per epoch); returns (model, per-epoch history).

    resume: continue from the newest checkpoint in ``run_dir`` (an interrupted run continues at its epoch);
    allow_change: train fields a resume may change (see ``aelab.train.check_resume``);
    corrupt: train a restorer on (corrupt(x), x) pairs (``aelab.corruptions``), recorded with the run;
    warm: (what it is, a trained model): start from its weights, all but the layers at the latent whose shape
    differs (``aelab.models.warm``), recorded with the run;
    full_test_last: False scores the last epoch on the per-epoch test subset too (``aelab.train.fit``).
    """
    run_dir = Path(run_dir)
    model = build_model(model_cfg, train.shape, train_cfg.seed)
    config = {"model": to_dict(model_cfg), "train": to_dict(train_cfg), "data": to_dict(data_cfg),
              "effective_spec": ",".join(map(str, model.spec))}  # the last layer carries d
    if corrupt is not None:
        config["corruption"] = str(corrupt)
    if warm is not None:  # a resumed run then loads its checkpoint over these weights
        from aelab.models.warm import warm_start_

        config["warm_start"] = {"from": warm[0], "own_initial_weights": warm_start_(model, warm[1])}
    hashes = data_hashes(data_cfg, train, test)
    from aelab import distributed

    if distributed.is_main() and not (resume and (run_dir / "run.json").exists()):  # a resumed run keeps its record
        record(run_dir, config=config, seed=train_cfg.seed, data=hashes)
    history = fit(model, to_float(train.images), to_float(test.images), train_cfg, run_dir, resume=resume,
                  progress=progress, record={"config": config, "data": hashes}, allow_change=allow_change,
                  corrupt=corrupt, full_test_last=full_test_last)
    if distributed.is_main() and (run_dir / "run.json").exists():
        from aelab.runs import amend

        amend(run_dir, precision=history.precision, allocator=history.allocator, step=history.step,
              kernels=history.kernels, mean_image_mse=history.mean_image_mse)
    return model.cpu().eval(), history.epochs


def check_out(out: Path, resume: bool) -> None:
    """A training --out must be a folder, and a new run must not overwrite another's checkpoints."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; choose another --out")
    if not resume and (out / "checkpoints").exists() and any((out / "checkpoints").iterdir()):
        raise ConfigError(f"{out} already holds checkpoints; pass --resume or choose another --out")


def read_run_config(run_dir: str | Path) -> tuple[ModelConfig, TrainConfig, DataConfig]:
    run_dir = Path(run_dir)
    try:
        c = json.loads((run_dir / "run.json").read_text())["config"]
        return (build_section(ModelConfig, c["model"], "model"), build_section(TrainConfig, c["train"], "train"),
                build_section(DataConfig, c["data"], "data"))
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{run_dir} is not an aelab training run (no readable run.json); "
                          f"train one with: aelab train --out {run_dir}") from None


def load_trained(run_dir: str | Path, image_shape: tuple[int, int, int] | None = None
                 ) -> tuple[torch.nn.Module, ModelConfig, DataConfig]:
    """Rebuild the model of a finished training run from its run.json and newest checkpoint."""
    run_dir = Path(run_dir)
    model_cfg, train_cfg, data_cfg = read_run_config(run_dir)
    meta = latest_checkpoint(run_dir)
    if meta is None:
        raise ConfigError(f"{run_dir} has no complete checkpoint; train it first (aelab train --out {run_dir})")
    if image_shape is None:
        image_shape = load(data_cfg.name, "test", data_dir=data_cfg.data_dir).shape
    model = build_model(model_cfg, image_shape, train_cfg.seed)
    return load_model_weights(meta, model).eval(), model_cfg, data_cfg


# --------------------------------------------------------------------------- tables
def write_table(out: Path, stem: str, rows: list[dict], columns: tuple[str, ...], fmt: dict[str, str],
                footer: str = "", **extra) -> None:
    """``stem``.csv, ``stem``.md (a markdown table with ``footer``) and ``stem``.json (rows + ``extra``)."""
    cols = [c for c in columns if any(c in r for r in rows)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    atomic_write_text(out / f"{stem}.md", markdown_table(rows, cols, fmt) + ("\n" + footer + "\n" if footer else ""))
    atomic_write_json(out / f"{stem}.json", {"rows": rows, **extra})


def markdown_table(rows: list[dict], cols, fmt: dict[str, str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(r[c]) if r.get(c) is not None else "" for c in cols)
                     + " |")
    return "\n".join(lines) + "\n"


SWEEP_COLUMNS = ("d", "model", "mse", "loss", "psnr", "class_kept", "epochs", "train_seconds")
SWEEP_FORMAT = {"mse": "{:.4f}", "loss": "{:.2f}", "psnr": "{:.2f}", "class_kept": "{:.4f}",
                "train_seconds": "{:.0f}"}
LATENT_COLUMNS = ("d", "model", "density", "fid", "confident", "class_entropy", "nn_distance", "test_loglik",
                  "components")
LATENT_FORMAT = {"fid": "{:.2f}", "confident": "{:.3f}", "class_entropy": "{:.3f}", "nn_distance": "{:.3f}",
                 "test_loglik": "{:.2f}"}


# --------------------------------------------------------------------------- the d-sweep
def fit_pcas(dims, x_train: torch.Tensor) -> dict[int, PCA]:
    """PCA, the lecture's linear autoencoder, at each d (exact, deterministic)."""
    return {d: PCA(d).fit(x_train) for d in dims}


def sweep_rows(dims, models: dict[int, torch.nn.Module], histories: dict[int, list[dict]], pcas: dict[int, PCA],
               test: Dataset, judge: Judge | None) -> list[dict]:
    """One CNN row and one PCA row per d: MSE, lecture loss, PSNR, class kept."""
    rows = []
    for d in dims:
        cnn = {k: v for k, v in scores(models[d], test, judge).items() if k != "classifier_accuracy"}
        h = histories[d]
        cnn.update(epochs=len(h), train_seconds=sum(e["seconds"] for e in h))
        pca = {k: v for k, v in scores(pcas[d], test, judge).items() if k != "classifier_accuracy"}
        rows += [{"d": d, "model": "CNN", **cnn}, {"d": d, "model": "PCA", **pca}]
    return rows


def reconstruction_figure(out: Path, d: int, cnn: Codec, pca: Codec, x_show: torch.Tensor, row_cnn: dict,
                          row_pca: dict) -> Figure:
    """The lecture's figure: X, then g∘f(X) of the CNN, then of PCA, for one d."""
    file = f"figures/reconstructions-d{d}.png"
    save_rows(out / file, [("X (original samples)", x_show),
                           (f"g∘f(X) (CNN, d = {d})", reconstruct(cnn, x_show)),
                           (f"g∘f(X) (PCA, d = {d})", reconstruct(pca, x_show))])
    return Figure(file, f"d = {d}: the first {len(x_show)} test images, their CNN and PCA reconstructions. "
                        f"Test MSE per pixel: CNN {row_cnn['mse']:.4f}, PCA {row_pca['mse']:.4f}.")


# --------------------------------------------------------------------------- the latent space
def interpolation_figure(out: Path, file: str, codec: Codec, x0: torch.Tensor, x1: torch.Tensor, steps: int,
                         title: str, caption: str) -> Figure:
    """Rows of xi(x, x', a) = g((1 - a) f(x) + a f(x')), a = 0 ... 1, one row per test pair."""
    from aelab.latent import interpolate

    save_rows(out / file, [("", interpolate(codec, x0, x1, steps).flatten(0, 1))], ncols=steps, title=title)
    return Figure(file, caption)


def fit_density(name: str, z_train: np.ndarray, cfg: LatentConfig, progress: bool = False):
    from aelab.latent import make_density

    options = {}
    if name == "gmm" and cfg.gmm_components is not None:
        options["n_components"] = cfg.gmm_components
    if name == "flow":
        options.update(steps=cfg.flow_steps, progress=progress)
    return make_density(name, seed=cfg.seed, **options).fit(z_train)


def latent_study(cfg: LatentConfig, aes: dict[int, Codec], vaes: dict[tuple[float, int], Codec],
                 pcas: dict[int, PCA], train: Dataset, test: Dataset, judge: Judge | None, out: Path, *,
                 progress: bool = True) -> tuple[list[dict], list[Figure]]:
    """Interpolations (AE, PCA, VAEs) and samples from each density fitted on training latents, scored.

    aes: d -> autoencoder; vaes: (beta, d) -> VAE.  Rows: the real test images first (the floor of each score),
    then one per (d, model, density), the rows of ``latent_at`` for each d of ``cfg.dims`` in turn.  Without a
    judge (unlabelled data) only the log-likelihoods are scored.
    """
    ref = sample_reference(judge, train)
    rows, figures = [real_images_row(cfg, ref, test)], []
    for d in cfg.dims:
        more, figs = latent_at(cfg, d, aes[d], {beta: v for (beta, vd), v in vaes.items() if vd == d}, pcas[d],
                               train, test, ref, out, progress=progress)
        rows += more
        figures += figs
    return rows, figures


def sample_reference(judge: Judge | None, train: Dataset):
    """What samples are scored against (``aelab.quality.Reference``: the training images' classifier features);
    None without a judge."""
    from aelab.quality import Reference

    return Reference.build(judge, to_float(train.images)) if judge is not None else None


def _score(ref, x: torch.Tensor) -> dict:
    from aelab.quality import sample_scores

    return sample_scores(ref, x) if ref is not None else {}


def real_images_row(cfg: LatentConfig, ref, test: Dataset) -> dict:
    """The real test images scored like the samples: the floor of each score."""
    return {"d": "-", "model": "test images", "density": "-", **_score(ref, to_float(test.images[: cfg.n_samples]))}


def latent_at(cfg: LatentConfig, d: int, ae: Codec, vaes: dict[float, Codec], pca: PCA, train: Dataset,
              test: Dataset, ref, out: Path, *, progress: bool = True, trained: str = "fp32",
              between=lambda: None) -> tuple[list[dict], list[Figure]]:
    """The latent study at one latent size d: samples from each density of ``cfg.densities`` fitted on the
    autoencoder's training latents and from each VAE's prior (vaes: beta -> VAE of size d), scored against
    ``ref`` (``sample_reference``; None: log-likelihoods only); interpolations between the same random test
    pairs for the AE, PCA and each VAE.  The codes are encoded in bf16 where the AE was ``trained`` in it and
    that measures faster (``latent.codes_precision``; each AE row's ``codes`` says which).  ``between()`` is
    called after each density (a stage computed beside others takes its share of the threads there:
    ``aelab.threads.follow``)."""
    from aelab.latent import codes_precision, decode_all, encode_all, make_density, random_pairs

    x_train, x_test = to_float(train.images), to_float(test.images)
    i0, i1 = random_pairs(len(x_test), cfg.n_pairs, cfg.seed)
    rows, figures, panels = [], [], []

    def sampled(codec, density, label, density_name, z_test=None):
        x = decode_all(codec, density.sample(cfg.n_samples, seed=cfg.seed))
        row = {"d": d, "model": label, "density": density_name, **_score(ref, x)}
        if z_test is not None:
            row["test_loglik"] = float(density.log_prob(z_test).mean())
        if hasattr(density, "n_components_"):
            row["components"] = int(density.n_components_)
        return row, x[:24]

    def caption(row):
        return f"FID {row['fid']:.1f}, confident {row['confident']:.2f}" if "fid" in row else row["density"]

    codes = codes_precision(ae, x_train, trained)
    z_train, z_test = (encode_all(ae, x, precision=codes["precision"]) for x in (x_train, x_test))
    for name in cfg.densities:
        t0 = time.perf_counter()
        row, shown = sampled(ae, fit_density(name, z_train, cfg, progress), "AE", name, z_test)
        row["seconds"], row["codes"] = time.perf_counter() - t0, codes["precision"]
        if codes["speedup"] is not None:
            row["codes_speedup"] = codes["speedup"]
        rows.append(row)
        panels.append((f"AE d = {d}, {name}: {caption(row)}", shown))
        between()
    for beta, vae in vaes.items():
        label = "VAE" if beta == 1.0 else f"beta-VAE {beta:g}"
        row, shown = sampled(vae, make_density("prior").fit(np.zeros((1, vae.latent_dim))), label, "prior")
        rows.append(row)
        panels.append((f"{label} d = {d}, prior: {caption(row)}", shown))
        slug = label.lower().replace(" ", "").replace("-", "")
        figures.append(interpolation_figure(out, f"figures/interpolation-{slug}-d{d}.png", vae, x_test[i0],
                                            x_test[i1], cfg.steps, f"{label} interpolation (d = {d})",
                                            f"{label} (d = {d}): interpolation between the same test pairs."))
    file = f"figures/sampling-d{d}.png"
    save_rows(out / file, panels, title=f"Sampling the latent space, d = {d}")
    figures.append(Figure(file, f"d = {d}: decoded samples from each density fitted on the training latents "
                                f"(the lecture's is diag), and from each VAE's prior."))
    figures.append(interpolation_figure(
        out, f"figures/interpolation-ae-d{d}.png", ae, x_test[i0], x_test[i1], cfg.steps,
        f"Autoencoder interpolation (d = {d})",
        f"Autoencoder (d = {d}): xi(x, x', a) = g((1 - a) f(x) + a f(x')) between {cfg.n_pairs} random "
        "test pairs."))
    figures.append(interpolation_figure(
        out, f"figures/interpolation-pca-d{d}.png", pca, x_test[i0], x_test[i1], cfg.steps,
        f"PCA interpolation (d = {d})", f"PCA (d = {d}) between the same pairs: a straight line in pixel space "
                                         "(a cross-fade)."))
    return rows, figures


# --------------------------------------------------------------------------- one-off jobs of the CLI
def train_and_score(cfg, out: str | Path, *, resume: bool = False, progress: bool = True, allow_change=()) -> dict:
    """`aelab train`: train ``cfg.model`` with ``cfg.train`` on ``cfg.data`` into ``out``, score it on the test
    set (with the dataset's fixed classifier when it has labels) and write out/metrics.json.

    One writer per folder: a second run on the same ``out`` is refused while this one holds its lock."""
    from contextlib import nullcontext

    from aelab import distributed
    from aelab.evaluator import judge_for
    from aelab.runs import RunLock

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; choose another --out")
    train, test = load_splits(cfg.data)
    main = not distributed.requested() or os.environ.get("RANK", "0") == "0"
    with RunLock(out) if main else nullcontext():  # under torchrun, rank 0 holds the folder for all
        check_out(out, resume)
        model, history = train_model(cfg.model, cfg.train, cfg.data, train, test, out, resume=resume,
                                     progress=progress, allow_change=allow_change)
        if not main:
            return {}
        judge = judge_for(*load_full(cfg.data), progress=progress)
        metrics = {**scores(model, test, judge), "epochs": len(history),
                   "train_seconds": sum(e["seconds"] for e in history), "history": history}
        atomic_write_json(out / "metrics.json", metrics)
    return metrics


def interpolate_job(cfg, out: str | Path, *, run: str | Path | None = None, pca: int | None = None, pairs: int = 6,
                    steps: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """`aelab interpolate`: a figure of interpolations between random test pairs, for a trained run or PCA."""
    from aelab.latent import random_pairs

    if run is not None:
        codec, model_cfg, data_cfg = load_trained(run)
        name = f"{model_label(model_cfg)} d = {model_cfg.d}"
        train, test = load_splits(data_cfg)
    else:
        data_cfg = cfg.data
        train, test = load_splits(data_cfg)
        codec, name = PCA(pca).fit(to_float(train.images)), f"PCA d = {pca}"
    x = to_float(test.images)
    i0, i1 = random_pairs(len(x), pairs, cfg.latent.seed)
    out = Path(out)
    interpolation_figure(out.parent, out.name, codec, x[i0], x[i1], steps, f"{name} interpolation", "")
    return i0, i1


def sample_job(run: str | Path, density: str, cfg: LatentConfig, out: str | Path) -> dict[str, float]:
    """`aelab sample`: fit ``density`` on a trained run's training latents, decode samples, score them."""
    from aelab.evaluator import judge_for
    from aelab.latent import decode_all, encode_all, make_density
    from aelab.quality import Reference, sample_scores

    codec, model_cfg, data_cfg = load_trained(run)
    train, _ = load_splits(data_cfg)
    x_train = to_float(train.images)
    if density == "prior":
        dens = make_density("prior").fit(np.zeros((1, codec.latent_dim)))
    else:
        if density not in ("diag", "full", "gmm", "flow"):
            raise ConfigError(f"unknown density {density!r}; choose one of: diag, full, gmm, flow, prior")
        dens = fit_density(density, encode_all(codec, x_train), cfg)
    x = decode_all(codec, dens.sample(cfg.n_samples, seed=cfg.seed))
    save_rows(out, [(f"{model_label(model_cfg)} d = {model_cfg.d}, samples from {density}", x[:48])])
    judge = judge_for(*load_full(data_cfg))
    return sample_scores(Reference.build(judge, x_train), x) if judge is not None else {}


# --------------------------------------------------------------------------- decoder families
DECODER_COLUMNS = ("family", "d", "seeds", "mse", "psnr", "class_kept", "recon_stride_share", "sample_stride_share",
                   "sample_fid", "init_stride_share", "coverage_score", "params", "macs", "seconds_per_epoch")
DECODER_NUMERIC = ("mse", "psnr", "class_kept", "recon_stride_share", "sample_stride_share", "sample_fid",
                   "init_stride_share", "coverage_score", "seconds_per_epoch")


def _flat_images(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) -> (N * C, H, W) in [0, 1] for the spectral scores."""
    return x.clamp(0, 1).reshape(-1, *x.shape[2:]).double().numpy()


def epoch_seconds(models: dict, x: torch.Tensor, n_train: int, rounds: int = 8, steps: int = 3) -> dict:
    """Seconds per training epoch of each model on this machine: training steps of the trainer's (loss, backward,
    Adam step) on the batch x: (B, C, H, W), timed in ``rounds`` rounds that visit every model in turn (``steps``
    steps each, after one warm-up round), so that a slow spell of a shared machine falls on every model alike;
    the median step times the number of batches in ``n_train`` images.  Measured in one place, so the cost column
    compares families on one machine even when the models were trained elsewhere.  The models are trained a
    few steps: pass fresh ones.

    models: key -> model; returns key -> seconds per epoch."""
    from aelab.train import training_loss

    fmt = torch.channels_last if x.device.type == "cpu" else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    optimizers = {}
    for key, model in models.items():
        model.train().to(memory_format=fmt)
        optimizers[key] = torch.optim.Adam(model.parameters(), lr=1e-3)
    times: dict = {key: [] for key in models}
    for r in range(rounds + 1):
        for key, model in models.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                loss = training_loss(model, x)
                optimizers[key].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[key].step()
                if r:  # round 0 warms up (oneDNN builds its kernels on first use)
                    times[key].append(time.perf_counter() - t0)
    batches = -(-n_train // len(x))
    return {key: float(np.median(t)) * batches for key, t in times.items()}


def decoder_row(model, untrained, seconds_per_epoch: float, train: Dataset, test: Dataset, judge: Judge | None,
                n_samples: int, seed: int, ref=None) -> dict:
    """One trained model of the decoder study: quality, artefacts (reconstructions, GMM samples, at init), cost.

    seconds_per_epoch: ``epoch_seconds`` of the family, measured by the caller.  ref: the ``quality.Reference``
    of the first 10000 training images (built once by the caller)."""
    from aelab.latent import decode_all, encode_all, make_density
    from aelab.models.summary import layer_table
    from aelab.ops.artefacts import coverage_score_2d, stride_power_share
    from aelab.quality import Reference, sample_scores

    stride = max(layer.stride for layer in model.spec)
    share = (lambda x: stride_power_share(_flat_images(x), stride)) if stride > 1 else (lambda x: None)
    x_test = to_float(test.images)
    row = {k: v for k, v in scores(model, test, judge).items() if k in ("mse", "psnr", "class_kept")}
    row["recon_stride_share"] = share(reconstruct(model, x_test[:2000]))
    x_fit = to_float(train.images[:10000])
    gmm = make_density("gmm", seed=seed, n_components=10).fit(encode_all(model, x_fit))
    samples = decode_all(model, gmm.sample(n_samples, seed=seed))
    row["sample_stride_share"] = share(samples)
    if judge is not None:
        row["sample_fid"] = sample_scores(ref or Reference.build(judge, x_fit), samples)["fid"]
    row["init_stride_share"] = share(reconstruct(untrained, x_test[:2000]))
    transposed = [m for m in model.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    row["coverage_score"] = max((coverage_score_2d(m.kernel_size[0], m.stride[0]) for m in transposed), default=0.0)
    rows = layer_table(model, train.shape)
    decoder_rows = [r for r in rows if r.name.startswith("decoder")]
    row.update(params=sum(r.params for r in decoder_rows), macs=sum(r.macs for r in decoder_rows),
               seconds_per_epoch=seconds_per_epoch)
    return row


def untrained_grid(families, specs, d: int, x: torch.Tensor, seeds: int) -> list[dict]:
    """Does a family start with a grid?  The stride-2 power share of each untrained model's output g(f(x)),
    mean and spread over ``seeds`` initialisations, for each encoder spec (its decoder mirrors it).

    x: (N, C, H, W) test images.  A spec the images' size does not admit is reported, not raised."""
    from aelab.ops.artefacts import stride_power_share

    rows = []
    for spec in specs:
        for family in families:
            m = ModelConfig(d=d, spec=spec, decoder=family)
            try:
                shares = [stride_power_share(_flat_images(reconstruct(build_model(m, tuple(x.shape[1:]), s), x)), 2)
                          for s in range(seeds)]
            except ConfigError as e:
                rows.append({"spec": spec, "family": family, "error": str(e)})
                continue
            layers = m.layers
            last_up = next((layer for layer in layers if layer.stride > 1), None)  # the decoder mirrors it last
            rows.append({"spec": spec, "family": family, "seeds": seeds, "last_kernel": last_up and last_up.kernel,
                         "last_stride": last_up and last_up.stride, "init_share": float(np.mean(shares)),
                         "init_share_sd": float(np.std(shares, ddof=1)) if seeds > 1 else 0.0})
    return rows


def summarise_decoders(rows: list[dict]) -> list[dict]:
    """Mean and spread (sample standard deviation, 0 for one seed) over seeds, per (family, d)."""
    out = []
    for key in dict.fromkeys((r["family"], r["d"]) for r in rows):
        group = [r for r in rows if (r["family"], r["d"]) == key]
        s = {"family": key[0], "d": key[1], "seeds": len(group), "params": group[0]["params"],
             "macs": group[0]["macs"]}
        for col in DECODER_NUMERIC:
            vals = [r[col] for r in group if r.get(col) is not None]
            if vals:
                s[col] = float(np.mean(vals))
                s[f"{col}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        out.append(s)
    return out


def decoder_figures(out: Path, trained: dict, untrained: dict, test: Dataset, n_show: int) -> list[Figure]:
    """Zoomed reconstructions per family, radially averaged power spectra, and each untrained decoder's output.

    trained / untrained: family -> model (one d, seed of the first run)."""
    from aelab.figures import save_figure, subplots
    from aelab.ops.artefacts import power_spectrum, radial_profile

    x = to_float(test.images)
    d = next(iter(trained.values())).latent_dim
    save_rows(out / "figures/decoders-reconstructions.png",
              [("X (test images)", x[:n_show])] + [(f"{f}", reconstruct(m, x[:n_show])) for f, m in trained.items()],
              ncols=n_show, zoom=2.0, title=f"Reconstructions by decoder family (d = {d})")
    fig, ax = subplots(figsize=(6.5, 4))
    for name, images in [("test images", x[:2000])] + [(f, reconstruct(m, x[:2000])) for f, m in trained.items()]:
        f, p = radial_profile(power_spectrum(_flat_images(images)))
        # from the second bin: the first holds only the zero frequency, which each image's mean removal empties
        ax.semilogy(f[1:], p[1:], label=name, lw=2 if name == "test images" else 1.2)
    ax.axvline(0.5, color="grey", ls=":", lw=1)
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("mean power")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, out / "figures/decoders-spectra.png")
    save_rows(out / "figures/decoders-untrained.png",
              [(f"{f} (untrained)", reconstruct(m, x[:12])) for f, m in untrained.items()], ncols=12,
              title="Each decoder's output at initialisation (same encoder, same test images)")
    return [Figure("figures/decoders-reconstructions.png",
                   f"The first {n_show} test images and their reconstructions by each decoder family, zoomed "
                   f"(d = {d}, first seed)."),
            Figure("figures/decoders-spectra.png",
                   "Radially averaged power spectra of 2000 test images and of their reconstructions by each family; "
                   "the dotted line is the stride-2 frequency (0.5 cycles/pixel), where a checkerboard puts power."),
            Figure("figures/decoders-untrained.png",
                   "Untrained decoders (initial weights) on the same test images: which family starts with a grid?")]


# --------------------------------------------------------------------------- restoration
def train_restorer(cfg, corruption: str, out: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """`aelab restore train`: the lecture's autoencoder (any decoder) trained on (corrupted x, clean x) pairs,
    corruptions drawn afresh each batch; scored on the test set corrupted once with a fixed seed."""
    from aelab.corruptions import parse
    from aelab.evaluator import judge_for
    from aelab.metrics import scores_from_sse
    from aelab.runs import RunLock
    from aelab.train import TEST_CORRUPTION_SEED

    corrupt = parse(corruption)
    if cfg.model.kind != "ae":
        raise ConfigError("restoring models are autoencoders: use --model ae")
    out = Path(out)
    train, test = load_splits(cfg.data)
    with RunLock(out):
        check_out(out, resume)
        model, history = train_model(cfg.model, cfg.train, cfg.data, train, test, out, resume=resume,
                                     progress=progress, corrupt=corrupt)
        x = to_float(test.images)
        noisy = corrupt(x, TEST_CORRUPTION_SEED)
        restored = reconstruct(model, noisy)
        pixels = x[0].numel()
        metrics = {"corruption": str(corrupt), "epochs": len(history), "history": history,
                   "corrupted": scores_from_sse((noisy.clamp(0, 1) - x).pow(2).flatten(1).sum(1).double(), pixels),
                   "restored": scores_from_sse((restored - x).pow(2).flatten(1).sum(1).double(), pixels)}
        judge = judge_for(*load_full(cfg.data), progress=progress)
        if judge is not None:
            metrics["corrupted"]["class_kept"] = judge.class_kept(noisy, test.labels)
            metrics["restored"]["class_kept"] = judge.class_kept(restored, test.labels)
        atomic_write_json(out / "metrics.json", metrics)
    return metrics


def restore_folder(run: str | Path, source: str | Path, dest: str | Path) -> tuple[list[Path], list[str]]:
    """`aelab restore apply`: restore every PNG/JPEG in ``source`` with a trained restorer, writing PNGs of the
    model's size to ``dest``; unreadable files are reported, the rest restored.  Returns (written, problems)."""
    from PIL import Image

    from aelab.data.sources import IMAGE_SUFFIXES, _read_image
    from aelab.errors import DataError
    from aelab.io import atomic_save

    model, _, _ = load_trained(run)
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise ConfigError(f"--in {source} is not a folder of images")
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"no PNG/JPEG images in {source}")
    (h, w), channels = model.image_size, model.in_channels
    if h != w:
        raise ConfigError(f"restore apply needs a model of square images, this one takes {h}x{w}")
    images, names, problems = [], [], []
    for path in files:
        try:
            images.append(_read_image(path, h, channels))
            names.append(path)
        except DataError as e:
            problems.append(str(e))
    written = []
    if images:
        restored = reconstruct(model, to_float(np.stack(images)))
        for path, img in zip(names, restored, strict=True):
            arr = (img.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
            pil = Image.fromarray(arr[0] if channels == 1 else arr.transpose(1, 2, 0))
            target = dest / f"{path.stem}.png"
            atomic_save(target, lambda tmp, pil=pil: pil.save(tmp, format="PNG"))
            written.append(target)
    return written, problems
