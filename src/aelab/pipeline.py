"""`aelab reproduce`: the whole lecture as named, cached stages, ending in one HTML report.

    data ─► evaluator ─► ae-d{d}, vae-d{d}, ... ─► pca, reference ─► sweep, latent-d{d} ─► latent ─► ops
         ─► model ─► report

``plan(cfg)`` lists the stages of a configuration, each with the config slice it reads; ``reproduce``
runs them through ``aelab.stages`` (reusing every complete one), writes the run record and copies the
report to ``<out>/report/``.  Each stage writes ``manifest.json`` (its report section: figures with
captions) and returns its metrics; the report stage reads only those files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aelab.config import TRAIN_BEFORE, Config, DataConfig, ModelConfig, TrainConfig, to_dict, to_toml
from aelab.data import to_float
from aelab.errors import ConfigError
from aelab.experiments import (
    LATENT_COLUMNS,
    LATENT_FORMAT,
    SWEEP_COLUMNS,
    SWEEP_FORMAT,
    Figure,
    fit_pcas,
    load_splits,
    load_trained,
    model_label,
    reconstruction_figure,
    sweep_rows,
    train_model,
    write_table,
)
from aelab.figures import save_rows
from aelab.io import atomic_write_json, atomic_write_text
from aelab.runs import environment, processor, record
from aelab.stages import Context, Result, Stage, is_complete, keys, read_json, run_parallel, run_stages, stage_dir


def write_manifest(out: Path, section: str, figures: list[Figure], **extra) -> None:
    atomic_write_json(out / "manifest.json", {"section": section, "figures": [dataclasses.asdict(f) for f in figures],
                                              **extra})


# --------------------------------------------------------------------------- shared loaders (memoised per process)
def _splits(ctx: Context, cfg: Config, data: DataConfig | None = None):
    """The (train, test) splits of ``data`` (default: cfg.data), loaded once per process."""
    data = data or cfg.data
    key = f"splits:{data}"
    if key not in ctx.memo:
        ctx.memo[key] = load_splits(data)
    return ctx.memo[key]


def _judge(ctx: Context):
    from aelab.evaluator import load_judge

    if "judge" not in ctx.memo:
        path = ctx.inputs["evaluator"] / "evaluator.safetensors"
        ctx.memo["judge"] = load_judge(path) if path.exists() else None
    return ctx.memo["judge"]


def _reference(ctx: Context, cfg: Config):
    """What the latent study's samples are scored against (``quality.Reference``), from the ``reference`` stage's
    feature statistics; None without a judge."""
    from aelab.quality import Reference

    key = f"reference:{cfg.data}"
    if key not in ctx.memo:
        path, judge = ctx.inputs["reference"] / "reference.safetensors", _judge(ctx)
        ctx.memo[key] = (Reference.load(judge, to_float(_splits(ctx, cfg)[0].images), path)
                         if judge is not None else None)
    return ctx.memo[key]


def reference_stage(cfg: Config) -> Stage:
    """The classifier's feature statistics of the training images (``experiments.sample_reference``), which the
    latent study's samples are scored against: computed once (the classifier on 60000 digits, about 7 s on one
    CPU thread) rather than in the process of every stage that scores samples."""
    def run(ctx: Context) -> dict:
        from aelab.experiments import sample_reference

        ref = sample_reference(_judge(ctx), _splits(ctx, cfg)[0])
        if ref is None:
            return {"features": None, "note": "no classifier for this dataset: samples get no FID"}
        ref.save(ctx.out / "reference.safetensors")
        return {"features": len(ref.mu), "images": len(ref.train_flat)}

    return Stage("reference", run, {"data": to_dict(cfg.data)}, needs=("data", "evaluator"))


def _model(ctx: Context, name: str, image_shape):
    key = f"model:{ctx.inputs[name]}"
    if key not in ctx.memo:
        ctx.memo[key] = load_trained(ctx.inputs[name], image_shape)[0]
    return ctx.memo[key]


def _trained_precision(ctx: Context, name: str) -> str:
    """The precision training stage ``name`` trained in, as its run.json records it (fp32 where it does not)."""
    run = json.loads((ctx.inputs[name] / "run.json").read_text())
    return (run.get("precision") or {}).get("precision", "fp32")


def _pcas(ctx: Context, dims) -> dict:
    from aelab.pca import PCA

    return {d: PCA.load(ctx.inputs["pca"] / f"pca-d{d}.safetensors") for d in dims}


# --------------------------------------------------------------------------- the stages
def model_stage_name(m: ModelConfig) -> str:
    """ae-d8, vae-d8, bvae4-d16; with another decoder family: ae-d8-resize-bilinear, ..."""
    if m.kind == "ae":
        name = f"ae-d{m.d}"
    else:
        name = f"vae-d{m.d}" if m.beta == 1.0 else f"bvae{m.beta:g}-d{m.d}"
    return name if m.decoder == "transposed" else f"{name}-{m.decoder}"


def data_stage(cfg: Config, hashes: dict[str, str]) -> Stage:
    def run(ctx: Context) -> dict:
        train, test = _splits(ctx, cfg)
        first = test.subset(36)
        file = "figures/first-36-test.png"
        save_rows(ctx.out / file, [("X (original samples)", first.images)])
        labels = " ".join(map(str, first.labels))
        write_manifest(ctx.out, "data", [Figure(file, f"The first {len(first)} {cfg.data.name} test images, in rows "
                                                      f"of 12 as in the lecture (labels {labels}).")])
        return {"dataset": cfg.data.name, "source": test.source, "classes": list(test.classes),
                **{split: {"n": len(d), "shape": list(d.shape), "dtype": str(d.images.dtype),
                           "class_counts": d.class_counts().tolist(), "sha256": d.content_hash()}
                   for split, d in (("train", train), ("test", test))}}

    return Stage("data", run, {"data": to_dict(cfg.data), "sha256": hashes})


def evaluator_stage(cfg: Config) -> Stage:
    def run(ctx: Context) -> dict:
        from aelab.evaluator import SHIPPED_DIR, judge_for
        from aelab.experiments import load_full

        judge = judge_for(*load_full(cfg.data), progress=ctx.progress)
        if judge is None:
            return {"dataset": cfg.data.name, "accuracy": None, "note": "no class labels: no class-kept scores"}
        src = Path(judge.source)
        shutil.copyfile(src, ctx.out / "evaluator.safetensors")
        shutil.copyfile(src.with_suffix(".json"), ctx.out / "evaluator.json")
        rec = read_json(src.with_suffix(".json"))
        return {"dataset": cfg.data.name, "accuracy": judge.accuracy, "shipped": src.parent == SHIPPED_DIR,
                "sha256": rec["sha256"], "recipe": rec.get("recipe", "")}

    return Stage("evaluator", run, {"data": cfg.data.name, "data_dir": cfg.data.data_dir}, needs=("data",))


def train_stage(cfg: Config, m: ModelConfig, tc: TrainConfig | None = None, data: DataConfig | None = None,
                name: str | None = None, corruption: str | None = None, warm_from: str | None = None,
                scored_by_sweep: bool = False) -> Stage:
    """Train model ``m`` with ``tc`` (default cfg.train) on ``data`` (default cfg.data); with a corruption
    (``aelab.corruptions``), a restorer on (corrupted x, clean x) pairs; with ``warm_from`` (a training stage's
    name), starting from that stage's trained weights (``aelab.models.warm``).  scored_by_sweep: the sweep
    scores the trained model on the whole test set, so the training scores its last epoch, like the others, on
    the first ``train.eval_subset`` test images only (not part of the key: the weights are the same)."""
    tc, data = tc or cfg.train, data or cfg.data
    name = name or model_stage_name(m)
    corrupt = None
    if corruption is not None:
        from aelab.corruptions import parse

        corrupt = parse(corruption)

    def run(ctx: Context) -> dict:
        train, test = _splits(ctx, cfg, data)
        if ctx.progress:
            print(f"  training {model_label(m)} d = {m.d} ({m.decoder} decoder, seed {tc.seed}): {tc.epochs} "
                  f"epoch(s) on {len(train)} images")
        warm = None
        if warm_from is not None:
            warm = (f"{warm_from} (stage {ctx.inputs[warm_from].name})", _model(ctx, warm_from, train.shape))
            if ctx.progress:
                print(f"    starting from {warm_from}'s trained weights")
        _, history = train_model(m, tc, data, train, test, ctx.out, resume=True, progress=ctx.progress,
                                 corrupt=corrupt, warm=warm, full_test_last=not scored_by_sweep)
        from aelab import distributed

        if not distributed.is_main():  # rank 0 keeps the record
            return {}
        for old in sorted((ctx.out / "checkpoints").glob("epoch-*.json"))[:-1]:  # keep the final checkpoint
            old.with_suffix(".safetensors").unlink(missing_ok=True)
            old.unlink()
        return {"model": model_label(m), "d": m.d, "epochs": len(history), "history": history,
                "train_seconds": sum(e["seconds"] for e in history), "test_mse": history[-1]["test_mse"],
                "test_images": history[-1]["test_images"]}

    from aelab.models.decoders import VERSIONS

    key = {"model": to_dict(m), "train": train_key(tc), "data": to_dict(data)}
    if corruption is not None:
        key["corruption"] = corruption
    if warm_from is not None:  # the source's own key joins this one through needs
        key["warm_from"] = warm_from
    needs = ("data",) if warm_from is None else ("data", warm_from)
    return Stage(name, run, key, needs=needs, resumable=True, version=VERSIONS[m.decoder], collective=True)


# Train settings added since studies were cached, with the value every earlier run trained with: a stage's key
# leaves such a setting out while it has that value, so that a cache made before the setting existed stays valid
# (the run's record, run.json, still states it).
KEY_NEUTRAL = {k: TRAIN_BEFORE[k] for k in ("warmup",)}
# Train settings that change neither a model's weights nor what a later stage reads of it: never in a stage's key.
# warm_epochs and cold_dims are the study's plan (a warm-started stage's key has its epochs and its source instead);
# eval_subset sets only how many test images the record's per-epoch scores before the last epoch use.
UNKEYED = ("warm_epochs", "cold_dims", "eval_subset")


def train_key(tc: TrainConfig) -> dict[str, Any]:
    """The train settings a training stage's key is made of: ``to_dict(tc)`` less UNKEYED and those at their
    KEY_NEUTRAL value."""
    return {k: v for k, v in to_dict(tc).items()
            if k not in UNKEYED and not (k in KEY_NEUTRAL and v == KEY_NEUTRAL[k])}


def trained_for_study(cfg: Config) -> list[ModelConfig]:
    """The models the sweep and the latent study train: an AE at each of their d, the VAEs of ``latent.vaes``."""
    ae_dims = sorted(set(cfg.sweep.dims) | set(cfg.latent.dims))
    models = [dataclasses.replace(cfg.model, kind="ae", d=d, beta=1.0) for d in ae_dims]
    return models + [dataclasses.replace(cfg.model, kind="vae", d=d, beta=beta)
                     for beta, dims in cfg.latent.vae_models for d in dims if d in cfg.latent.dims]


def warm_sources(cfg: Config) -> dict[str, str]:
    """stage name -> the stage it starts from, for the study's models under ``train.warm_epochs``: each starts from
    the largest-d model of its kind (AE or VAE), of its own beta where that d has one, unless it is that model
    itself or an autoencoder at a d of ``train.cold_dims`` (those train from scratch, so no source has a source);
    {} when warm_epochs is none.  A beta-VAE may so start from a VAE: the encoder's and decoder's inner layers
    carry over between betas (docs/benchmarks.md, "The study's models warm-started")."""
    if cfg.train.warm_epochs is None:
        return {}
    models = trained_for_study(cfg)
    out = {}
    for m in models:
        top = min((o for o in models if o.kind == m.kind), key=lambda o: (-o.d, o.beta != m.beta, o.beta))
        if top != m and not (m.kind == "ae" and m.d in cfg.train.cold_dims):
            out[model_stage_name(m)] = model_stage_name(top)
    return out


def study_stage(cfg: Config, m: ModelConfig) -> str:
    """The training stage of the sweep's or latent study's model ``m``: ``model_stage_name(m)``, with ``-warm`` where
    it starts from another (``warm_sources``), so that the name ``ae-d8`` always means a model trained from its own
    initial weights (the decoder study's, a cache made before warm starts)."""
    name = model_stage_name(m)
    return name + "-warm" if name in warm_sources(cfg) else name


def pca_stage(cfg: Config, dims: list[int]) -> Stage:
    def run(ctx: Context) -> dict:
        train, _ = _splits(ctx, cfg)
        for d, pca in fit_pcas(dims, to_float(train.images)).items():
            pca.save(ctx.out / f"pca-d{d}.safetensors")
        return {"dims": dims}

    return Stage("pca", run, {"dims": dims}, needs=("data",), version=2)  # 2: contiguous arrays saved


def sweep_stage(cfg: Config) -> Stage:
    dims = list(cfg.sweep.dims)
    models = {d: study_stage(cfg, dataclasses.replace(cfg.model, kind="ae", d=d, beta=1.0)) for d in dims}

    def run(ctx: Context) -> dict:
        train, test = _splits(ctx, cfg)
        judge = _judge(ctx)
        aes = {d: _model(ctx, models[d], train.shape) for d in dims}
        histories = {d: read_json(ctx.inputs[models[d]] / "metrics.json")["history"] for d in dims}
        pcas = _pcas(ctx, dims)  # read once, used for the table and the figures
        rows = sweep_rows(dims, aes, histories, pcas, test, judge)
        write_table(ctx.out, "results", rows, SWEEP_COLUMNS, SWEEP_FORMAT)
        x_show = to_float(test.images[: cfg.sweep.n_show])
        figures = [curve_figure(ctx.out, rows, judge is not None)]
        for d in dims:
            cnn, pca = (next(r for r in rows if r["d"] == d and r["model"] == m) for m in ("CNN", "PCA"))
            figures.append(reconstruction_figure(ctx.out, d, aes[d], pcas[d], x_show, cnn, pca))
        write_manifest(ctx.out, "sweep", figures)
        return {"rows": rows, "classifier_accuracy": judge.accuracy if judge else None}

    return Stage("sweep", run, {"sweep": to_dict(cfg.sweep)},
                 needs=("data", "evaluator", "pca", *models.values()))


def curve_figure(out: Path, rows: list[dict], kept: bool) -> Figure:
    """MSE (and class kept) against d for the CNN and PCA."""
    from aelab.figures import save_figure, subplots

    fig, axes = subplots(1, 2 if kept else 1, figsize=(9 if kept else 4.5, 3.4), squeeze=False)
    for model, style in (("CNN", "o-"), ("PCA", "s--")):
        r = [x for x in rows if x["model"] == model]
        axes[0, 0].plot([x["d"] for x in r], [x["mse"] for x in r], style, label=model)
        if kept:
            axes[0, 1].plot([x["d"] for x in r], [x["class_kept"] for x in r], style, label=model)
    for ax, label in zip(axes[0], ("test MSE per pixel", "class kept"), strict=False):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("latent size d")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, out / "figures/sweep-curves.png")
    return Figure("figures/sweep-curves.png", "Test MSE per pixel" + (" and class kept" if kept else "")
                  + " against d, CNN autoencoder vs PCA.")


def latent_vaes(cfg: Config, d: int) -> dict[float, str]:
    """beta -> the training stage of each VAE of the latent study at latent size d."""
    return {beta: study_stage(cfg, dataclasses.replace(cfg.model, kind="vae", d=d, beta=beta))
            for beta, dims in cfg.latent.vae_models for vd in dims if vd == d}


def latent_part_stage(cfg: Config, d: int) -> Stage:
    """The latent study at one d (``experiments.latent_at``): a stage of its own, so that under ``--jobs 2`` it
    runs as soon as its models are trained, beside the trainings still running, and a setting of one d
    recomputes that d alone.  Its rows and figures are gathered by the ``latent`` stage."""
    lat = cfg.latent
    ae = study_stage(cfg, dataclasses.replace(cfg.model, kind="ae", d=d, beta=1.0))
    vaes = latent_vaes(cfg, d)

    def run(ctx: Context) -> dict:
        from aelab import threads
        from aelab.experiments import latent_at

        train, test = _splits(ctx, cfg)
        rows, figures = latent_at(lat, d, _model(ctx, ae, train.shape),
                                  {beta: _model(ctx, n, train.shape) for beta, n in vaes.items()},
                                  _pcas(ctx, [d])[d], train, test, _reference(ctx, cfg), ctx.out,
                                  progress=ctx.progress, trained=_trained_precision(ctx, ae), between=threads.follow)
        return {"rows": rows, "figures": [dataclasses.asdict(f) for f in figures]}

    settings = {k: v for k, v in to_dict(lat).items() if k not in ("dims", "vaes")}  # what one d reads
    # version 2: the GMM's components chosen by held-out likelihood instead of BIC; 3: its EM in float32; 4: its
    # refit on all latents stopped after 20 iterations; 5: the codes in bf16 where the AE was trained in it and that
    # measures faster
    return Stage(f"latent-d{d}", run, {"latent": settings, "d": d, "vae_betas": list(vaes)},
                 needs=("data", "evaluator", "reference", "pca", ae, *vaes.values()), version=5)


def latent_stage(cfg: Config) -> Stage:
    """The latent study's table and figures: the real test images' scores (the floor of each score), then
    every d's rows from its ``latent-d{d}`` stage, its figures copied here."""
    lat = cfg.latent
    parts = [f"latent-d{d}" for d in lat.dims]

    def run(ctx: Context) -> dict:
        from aelab.experiments import real_images_row

        _, test = _splits(ctx, cfg)
        judge = _judge(ctx)
        rows, figures = [real_images_row(lat, _reference(ctx, cfg), test)], []
        for part in parts:
            done = read_json(ctx.inputs[part] / "metrics.json")
            rows += done["rows"]
            for fig in done["figures"]:
                (ctx.out / fig["file"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ctx.inputs[part] / fig["file"], ctx.out / fig["file"])
                figures.append(Figure(**fig))
        write_table(ctx.out, "latent", rows, LATENT_COLUMNS, LATENT_FORMAT)
        write_manifest(ctx.out, "latent", figures)
        return {"rows": rows, "classifier_accuracy": judge.accuracy if judge else None}

    return Stage("latent", run, {"latent": to_dict(lat)}, needs=("data", "evaluator", "reference", *parts),
                 version=2)


def ops_stage(cfg: Config) -> Stage:
    def run(ctx: Context) -> dict:
        from aelab.ops import round_trip
        from aelab.ops.artefacts import coverage_score, coverage_score_2d
        from aelab.ops.plots import conv_frames, plot_coverage, plot_matrix, plot_upsamplers, save_frames

        o, k, figures = ctx.out, cfg.ops.kernel, []
        for s in (1, 2):
            f = f"figures/matrix-7-k3-s{s}.png"
            plot_matrix(7, 3, s, o / f)
            figures.append(Figure(f, f"Kernel 3, stride {s}, input of length 7: the convolution matrix (inner "
                                     f"products) and its transpose (a sum of translated kernels)."))
        for s in (1, 2):
            for transposed in (False, True):
                stem = f"{'conv-transpose' if transposed else 'conv'}1d-s{s}"
                _, gif = save_frames(conv_frames([1, 2, 0, -1, 3], [1, 2, -1], s, transposed), o / "frames", stem)
                what = "Transposed convolution" if transposed else "Convolution"
                figures.append(Figure(str(gif.relative_to(o)), f"{what} step by step, stride {s} "
                                                               "(input 1 2 0 -1 3, kernel 1 2 -1)."))
        scores: dict[str, Any] = {}
        for s in cfg.ops.strides:
            f = f"figures/coverage-k{k}-s{s}.png"
            plot_coverage(k, s, o / f)
            scores[f"coverage_k{k}_s{s}"] = {"1d": coverage_score(k, s), "2d": coverage_score_2d(k, s)}
            figures.append(Figure(f, f"Taps per output pixel of a {k}x{k} transposed convolution with stride {s}: "
                                     f"2-D checkerboard score {coverage_score_2d(k, s):.4f} (1-D "
                                     f"{coverage_score(k, s):.4f}; 0 = even)."))
            f = f"figures/upsamplers-x{s}-k{k}.png"
            _, up = plot_upsamplers(o / f, s, k, cfg.ops.seed)
            scores[f"upsamplers_x{s}"] = up
            figures.append(Figure(f, f"A constant input upsampled x{s} with random {k}x{k} weights: "
                                  + ", ".join(f"{m} {v:.2f}" for m, v in up.items()) + " (checkerboard score)."))
        rule = [dataclasses.asdict(round_trip(w, 4, 2)) for w in range(8, 17)]
        write_manifest(o, "ops", figures)
        return {"scores": scores, "size_rule_k4_s2": rule}

    return Stage("ops", run, {"ops": to_dict(cfg.ops)}, version=2)


def model_table_stage(cfg: Config, shape: tuple[int, int, int]) -> Stage:
    def run(ctx: Context) -> dict:
        from aelab.experiments import build_model
        from aelab.models.summary import layer_table

        model = build_model(cfg.model, shape, cfg.train.seed)
        rows = layer_table(model, shape)
        return {"d": cfg.model.d, "kind": cfg.model.kind, "spec": ",".join(map(str, model.spec)),
                "layers": [dataclasses.asdict(r) for r in rows], "params": sum(r.params for r in rows),
                "macs": sum(r.macs for r in rows)}

    return Stage("model", run, {"model": to_dict(cfg.model), "shape": list(shape)})


OPTIONAL_STUDIES = ("decoders", "restoration")  # studies a run may leave out (``plan(skip=...)``)


def plan(cfg: Config, hashes: dict[str, str], shape: tuple[int, int, int], skip=()) -> list[Stage]:
    """Every stage of the lecture for ``cfg``, in an order where each stage's needs come first; the studies in
    ``skip`` (of ``OPTIONAL_STUDIES``) are left out with the training stages only they need, and the report
    leaves their sections out."""
    ae_dims = sorted(set(cfg.sweep.dims) | set(cfg.latent.dims))
    warm = warm_sources(cfg)

    def trainer(m: ModelConfig) -> Stage:
        # the sweep scores its autoencoders on the whole test set (with the class kept): their trainings need not
        # (docs/benchmarks.md, "The study's last seconds")
        swept = m.kind == "ae" and m.d in cfg.sweep.dims
        source = warm.get(model_stage_name(m))
        if source is None:
            return train_stage(cfg, m, scored_by_sweep=swept)
        return train_stage(cfg, m, dataclasses.replace(cfg.train, epochs=cfg.train.warm_epochs),
                           name=study_stage(cfg, m), warm_from=source, scored_by_sweep=swept)

    # under --jobs the trainings start in this order: the warm start's sources first (a stage is planned after
    # what it needs), then the autoencoders, largest d first (one of train.cold_dims among them), then the VAEs by
    # d.  So the sweep, which needs every autoencoder, runs beside the VAEs' trainings instead of alone at the
    # end, and the latent study's parts, which need the VAEs too, end the run side by side (one thread each), each
    # d's part as soon as its models are trained.  Simulated with the stage times of the Zen 4 study of 954 s
    # (benchmarks/schedule.py), this order ended within 1 to 8 s of the best of all 5040 orders of the
    # warm-started trainings, 16 to 25 s before the order by d alone (docs/benchmarks.md, "The GMM's EM in
    # float32, and the trainings' order").
    sources = set(warm.values())
    order = lambda m: (model_stage_name(m) not in sources, m.kind != "ae", -m.d)  # noqa: E731
    trainers = [trainer(m) for m in sorted(trained_for_study(cfg), key=order)]
    study_models = decoder_study_models(cfg)
    planned = {s.name for s in trainers}
    for (_family, _d, _seed), (name, m, tc, data) in study_models.items():
        if name not in planned:  # the names encode every difference, so a shared name is the same model
            trainers.append(train_stage(cfg, m, tc, data, name))
            planned.add(name)
    restorers = restore_models(cfg)
    trainers += [train_stage(cfg, m, tc, data, name, corruption) for name, (_, corruption, m, tc, data)
                 in restorers.items()]
    stages = [data_stage(cfg, hashes), evaluator_stage(cfg), *trainers, pca_stage(cfg, ae_dims), reference_stage(cfg),
              sweep_stage(cfg),
              *(latent_part_stage(cfg, d) for d in cfg.latent.dims), latent_stage(cfg),
              decoders_stage(cfg, study_models, shape), restoration_stage(cfg, restorers),
              ops_stage(cfg), model_table_stage(cfg, shape)]
    if skip:
        stages = without(stages, skip)
    return stages + [report_stage(cfg, [s.name for s in stages])]


def without(stages: list[Stage], skip) -> list[Stage]:
    """``stages`` less the studies in ``skip`` and the training stages that no remaining stage needs."""
    unknown = [s for s in skip if s not in OPTIONAL_STUDIES]
    if unknown:
        raise ConfigError(f"cannot leave out {', '.join(unknown)}; studies a run may skip: "
                          f"{', '.join(OPTIONAL_STUDIES)}")
    roots = [s.name for s in stages if not s.collective and s.name not in skip]
    return prune(stages, roots)


def decoder_study_models(cfg: Config) -> dict[tuple[str, int, int], tuple[str, ModelConfig, TrainConfig, DataConfig]]:
    """(family, d, seed) -> (stage name, model, train, data) of every model the decoder study trains."""
    data = dataclasses.replace(cfg.data, n_train=cfg.decoders.n_train or cfg.data.n_train)
    out = {}
    for family in cfg.decoders.families:
        for d, n_seeds in cfg.decoders.runs:
            for k in range(n_seeds):
                m = dataclasses.replace(cfg.model, kind="ae", d=d, beta=1.0, decoder=family)
                tc = dataclasses.replace(cfg.train, seed=cfg.train.seed + k)
                name = model_stage_name(m) + (f"-s{tc.seed}" if k else "") + (
                    f"-n{data.n_train}" if data != cfg.data else "")
                out[family, d, tc.seed] = (name, m, tc, data)
    return out


def decoders_stage(cfg: Config, models: dict, shape: tuple[int, int, int]) -> Stage:
    from aelab.experiments import (
        DECODER_COLUMNS,
        build_model,
        decoder_figures,
        decoder_row,
        epoch_seconds,
        summarise_decoders,
        untrained_grid,
    )

    def run(ctx: Context) -> dict:
        import torch

        from aelab.quality import Reference

        judge = _judge(ctx)
        _, test = _splits(ctx, cfg)

        # the cost column: every family timed here, in interleaved rounds (one machine, one load); one fresh model
        # per (family, d), initialised like its first seed (reversed: the first seed's entry is written last)
        fresh = {(f, d): build_model(m, shape, seed) for (f, d, seed), (_, m, _, _) in reversed(models.items())}
        _, _, tc, data = next(iter(models.values()))  # every model of the study trains on the same data
        train, _ = _splits(ctx, cfg, data)
        n_train = len(train)
        cost = epoch_seconds(fresh, to_float(train.images[:tc.batch_size]), n_train,
                             rounds=cfg.decoders.cost_rounds)
        rows, first, untrained, refs = [], {}, {}, {}
        for (family, d, seed), (name, m, _tc, data) in models.items():
            train, _ = _splits(ctx, cfg, data)
            if judge is not None and str(data) not in refs:
                refs[str(data)] = Reference.build(judge, to_float(train.images[:10000]))
            model = _model(ctx, name, shape)
            init = build_model(m, shape, seed)
            rows.append({"family": family, "d": d, "seed": seed,
                         **decoder_row(model, init, cost[family, d], train, test, judge, cfg.decoders.n_samples,
                                       cfg.latent.seed, refs.get(str(data)))})
            if d == cfg.decoders.runs[0][0] and family not in first:
                first[family], untrained[family] = model, init
        summary = summarise_decoders(rows)
        write_table(ctx.out, "decoders", summary, DECODER_COLUMNS, DECODER_FORMAT)
        atomic_write_json(ctx.out / "decoder-runs.json", rows)
        figures = decoder_figures(ctx.out, first, untrained, test, cfg.decoders.n_show)
        write_manifest(ctx.out, "decoders", figures)
        grid = untrained_grid(cfg.decoders.families, dict.fromkeys((cfg.model.spec, *cfg.decoders.init_specs)),
                              cfg.decoders.runs[0][0], to_float(test.images[:500]), cfg.decoders.init_seeds)
        return {"rows": summary, "runs": rows, "epochs": cfg.train.epochs, "untrained": grid,
                "timed_on": f"{processor()}, {torch.get_num_threads()} threads",
                "n_train": n_train,
                "classifier_accuracy": judge.accuracy if judge else None}

    names = [v[0] for v in models.values()]
    # version 3: seconds per epoch measured in the stage, families interleaved (not read from the training history);
    # version 4: the spectra figure without the emptied zero-frequency bin
    return Stage("decoders", run, {"decoders": to_dict(cfg.decoders), "latent_seed": cfg.latent.seed,
                                   "spec": cfg.model.spec}, needs=("data", "evaluator", *dict.fromkeys(names)),
                 version=4)


DECODER_FORMAT = {"mse": "{:.4f}", "psnr": "{:.2f}", "class_kept": "{:.4f}", "recon_stride_share": "{:.5f}",
                  "sample_stride_share": "{:.5f}", "sample_fid": "{:.1f}", "init_stride_share": "{:.4f}",
                  "coverage_score": "{:.3f}", "macs": "{:,}", "params": "{:,}", "seconds_per_epoch": "{:.1f}"}


def restore_datasets(cfg: Config) -> tuple[str, ...]:
    return cfg.restore.datasets or (cfg.data.name,)


def restore_data(cfg: Config, name: str) -> DataConfig:
    """The data of the restoration study on dataset ``name`` (the run's own data settings when it is data.name)."""
    base = cfg.data if name == cfg.data.name else DataConfig(name=name)
    return dataclasses.replace(base, n_train=cfg.restore.n_train or cfg.data.n_train, n_test=cfg.restore.n_test)


def restore_models(cfg: Config) -> dict[str, tuple[str, str, ModelConfig, TrainConfig, DataConfig]]:
    """stage name -> (dataset, corruption, model, train, data) of every restorer: one per corruption and dataset,
    and the blind one (stage names: restore-mnist-noise0.5, restore-mnist-blind, ...)."""
    from aelab.restoration import slug

    r = cfg.restore
    m = dataclasses.replace(cfg.model, kind="ae", d=r.d, beta=1.0)
    tc = dataclasses.replace(cfg.train, epochs=r.epochs or cfg.train.epochs)
    out = {}
    for ds in restore_datasets(cfg):
        for corruption in (*r.corruptions, *(("blind",) if r.blind else ())):
            name = f"restore-{ds}-{slug(corruption)}" + (f"-{m.decoder}" if m.decoder != "transposed" else "")
            out[name] = (ds, corruption, m, tc, restore_data(cfg, ds))
    return out


def restoration_stage(cfg: Config, models: dict) -> Stage:
    from aelab.restoration import SSIM_SETTINGS, study, summarise

    r = cfg.restore

    def run(ctx: Context) -> dict:
        from aelab.evaluator import judge_for
        from aelab.experiments import load_full

        rows, figures, info = [], [], {}
        for ds in restore_datasets(cfg):
            data = restore_data(cfg, ds)
            train, test = _splits(ctx, cfg, data)
            judge = judge_for(*load_full(data), progress=ctx.progress)
            trained = {corruption: _model(ctx, name, train.shape)
                       for name, (d, corruption, *_) in models.items() if d == ds}
            ds_rows, ds_figures = study(ds, r.levels, r.corruptions, train, test, trained, judge, ctx.out,
                                        n_val=r.n_val, n_show=r.n_show, progress=ctx.progress)
            rows += ds_rows
            figures += ds_figures
            info[ds] = {"n_train": len(train), "n_test": len(test),
                        "classifier_accuracy": judge.accuracy if judge else None}
        summary = summarise(rows)
        write_table(ctx.out, "restoration", rows, RESTORE_COLUMNS, RESTORE_FORMAT)
        write_table(ctx.out, "restoration-summary", summary, tuple(summary[0]), RESTORE_FORMAT)
        write_manifest(ctx.out, "restoration", figures)
        return {"rows": rows, "summary": summary, "datasets": info, "ssim": SSIM_SETTINGS,
                "epochs": r.epochs or cfg.train.epochs, "d": r.d, "decoder": cfg.model.decoder,
                "corruptions": list(r.corruptions), "blind": r.blind}

    key = {"restore": to_dict(r), "data": {ds: to_dict(restore_data(cfg, ds)) for ds in restore_datasets(cfg)}}
    return Stage("restoration", run, key, needs=("data", *models), version=1)


RESTORE_COLUMNS = ("dataset", "corruption", "method", "param", "psnr", "ssim", "class_kept", "mse", "seconds",
                   "trained_on")
RESTORE_FORMAT = {"psnr": "{:.2f}", "ssim": "{:.3f}", "class_kept": "{:.3f}", "mse": "{:.4f}", "seconds": "{:.1f}",
                  **{f"{w}_{m}": f for w in ("input", "best", "specialised", "blind")
                     for m, f in (("psnr", "{:.2f}"), ("ssim", "{:.3f}"), ("class_kept", "{:.3f}"))}}


def report_stage(cfg: Config, needs: list[str]) -> Stage:
    def run(ctx: Context) -> dict:
        from aelab.report import build_report

        return build_report(ctx.inputs, ctx.out, info=info)

    info = {"config": to_dict(cfg), "config_toml": to_toml(cfg), "preset": cfg.preset, "commit": git_commit(),
            "environment": {k: v for k, v in environment().items() if k != "torch_threads"}}
    return Stage("report", run, info, needs=tuple(needs), version=1)


def git_commit() -> str | None:
    """The commit of the aelab source tree, with '+dirty' when it has uncommitted changes; None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


# --------------------------------------------------------------------------- the command
def prune(stages: list[Stage], targets) -> list[Stage]:
    """Only the ``targets`` and what they need, in plan order."""
    by_name = {s.name: s for s in stages}
    unknown = [t for t in targets if t not in by_name]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(by_name)}")
    keep, todo = set(), list(targets)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo += by_name[name].needs
    return [s for s in stages if s.name in keep]


def _planned(cfg: Config, targets=None, skip=()) -> tuple[list[Stage], tuple, dict[str, str]]:
    splits = load_splits(cfg.data)
    hashes = {"train": splits[0].content_hash(), "test": splits[1].content_hash()}
    stages = plan(cfg, hashes, splits[0].shape, skip)
    return (prune(stages, targets) if targets else stages), splits, hashes


def plan_status(cfg: Config, out: str | Path, targets=None, skip=()) -> list[tuple[str, str, Path]]:
    """(stage, 'reuse' | 'compute' | 'resume', folder) for every planned stage, without running any."""
    stages, _, _ = _planned(cfg, targets, skip)
    all_keys = keys(stages)
    rows = []
    for s in stages:
        path = stage_dir(Path(out) / "stages", s.name, all_keys[s.name])
        partial = path.with_name(path.name + ".partial")
        status = "reuse" if is_complete(path) else ("resume" if s.resumable and partial.exists() else "compute")
        rows.append((s.name, status, path))
    return rows


def reproduce(cfg: Config, out: str | Path, *, progress: bool = True, echo: Callable[[str], None] = print,
              targets=None, skip=(), jobs: int = 1) -> list[Result]:
    """Run (or reuse) the stages of ``cfg`` (all, or only ``targets`` and their needs; without the studies in
    ``skip``) under ``out/stages``; with the report stage, copy the report to ``out/report``.  Writes
    out/config.toml, run.json, stages.json.

    jobs: stages computed at once, each in its own process (``aelab.stages.run_parallel``), the torch threads
    shared among them; 1 computes them one after the other in this process."""
    import torch

    from aelab import distributed
    from aelab.runs import RunLock
    from aelab.train import resolve_device

    if jobs < 1:
        raise ConfigError(f"jobs = {jobs}: give at least 1 (the number of stages computed at once)")
    out = Path(out)
    t0 = time.perf_counter()
    stages, splits, hashes = _planned(cfg, targets, skip)
    distributed.init_from_env(resolve_device(cfg.train.device))  # under torchrun: training stages use every process
    if jobs > 1 and distributed.world()[1] > 1:
        raise ConfigError(f"--jobs {jobs} under torchrun: the torchrun processes already share each training "
                          "stage; use one or the other")
    if not distributed.is_main():  # rank 0 holds the lock and writes; the others train with it
        return run_stages(stages, out / "stages", progress=False, memo={f"splits:{cfg.data}": splits})
    with RunLock(out):
        atomic_write_text(out / "config.toml", to_toml(cfg))
        computed = {}
        if jobs > 1:
            worker = functools.partial(_stage_in_worker, cfg, str(out), tuple(skip))
            computed = run_parallel(stages, out / "stages", jobs, worker, threads=torch.get_num_threads(), echo=echo)
        results = run_stages(stages, out / "stages", progress=progress, echo=echo,
                             memo={f"splits:{cfg.data}": splits}, computed=computed)
        _finish(cfg, out, results, hashes, t0, jobs)
    return results


def _stage_in_worker(cfg: Config, out: str, skip: tuple[str, ...], name: str, threads: int) -> Result:
    """In a process of ``run_parallel``: compute stage ``name`` of ``cfg`` in ``out`` (its needs are complete) with
    ``threads`` threads, in torch and in the BLAS under NumPy and scikit-learn (the latent study's mixtures)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    with threadpool_limits(limits=threads):
        stages, splits, _ = _planned(cfg, (name,), skip)
        results = run_stages(stages, Path(out) / "stages", progress=False, echo=lambda _text: None,
                             memo={f"splits:{cfg.data}": splits})
    return next(r for r in results if r.name == name)


def _finish(cfg: Config, out: Path, results: list[Result], hashes: dict[str, str], t0: float, jobs: int) -> None:
    report = next((r for r in results if r.name == "report"), None)
    if report is not None:
        publish_report(report.path, out / "report")
    record(out, config=to_dict(cfg), seed=cfg.train.seed,
           data={f"{cfg.data.name}/{k}": v for k, v in hashes.items()})
    atomic_write_json(out / "stages.json", {"seconds": time.perf_counter() - t0, "jobs": jobs, "commit": git_commit(),
                                            "stages": [{"name": r.name, "key": r.key, "status": r.status,
                                                        "seconds": r.seconds,
                                                        "path": r.path.relative_to(out).as_posix()}
                                                       for r in results]})


def publish_report(src: Path, dest: Path) -> None:
    """Copy a report folder into place in one rename (a reader never sees half a report)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def rebuild_report(run: str | Path) -> Path:
    """Render ``run``'s report again from its stage folders (after a template change, say)."""
    from aelab.report import build_report

    run = Path(run)
    try:
        rec = json.loads((run / "stages.json").read_text())
        paths = {s["name"]: run / s["path"] for s in rec["stages"]}  # relative: the folder can move
        info = read_json(paths.pop("report") / "stage.json")["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{run} is not a complete aelab reproduce folder (no readable stages.json with a report "
                          f"stage); run: aelab reproduce --out {run}") from None
    tmp = run / ".report.build"
    shutil.rmtree(tmp, ignore_errors=True)
    build_report(paths, tmp, info=info)
    publish_report(tmp, run / "report")
    shutil.rmtree(tmp, ignore_errors=True)
    return run / "report" / "index.html"


def summary_table(results: list[Result]) -> str:
    lines = [f"{'stage':32s} {'status':9s} {'seconds':>8s}"]
    for r in results:
        lines.append(f"{r.name:32s} {r.status:9s} {r.seconds:8.1f}")
    computed = [r for r in results if r.status == "computed"]
    lines.append(f"{len(computed)} computed ({sum(r.seconds for r in computed):.1f} s), "
                 f"{len(results) - len(computed)} reused")
    return "\n".join(lines)
