"""The ``aelab`` command line: a thin layer over the Python API.  No work happens at import time.

Each command parses its options, calls one library function and prints the result; errors that are
the user's to fix (``AelabError``) print one line and exit with status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from aelab import AelabError

app = typer.Typer(help="aelab: transposed convolutions and convolutional autoencoders.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
data_app = typer.Typer(help="Datasets: list, inspect, show.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Folder holding the dataset's files "
                                                                   "(for mnist: the four official IDX files).")]
Download = Annotated[bool, typer.Option("--download", help="Allow fetching from the dataset's official web "
                                                             "mirror (off by default).")]
Split = Annotated[str, typer.Option("--split", help="train, valid or test.")]


@data_app.command("list")
def data_list() -> None:
    """List the datasets aelab can load."""
    from aelab.data import DESCRIPTIONS

    for name, text in sorted(DESCRIPTIONS.items()):
        typer.echo(f"{name:15s} {text}")


@data_app.command("info")
def data_info(name: str, data_dir: DataDir = None, download: Download = False,
              val_size: Annotated[int, typer.Option(help="Hold out this many training images as 'valid'.")] = 0,
              seed: int = 0) -> None:
    """Shapes, dtype, class counts, content hash and source of each split."""
    from aelab.data import load

    for split in ("train", "valid", "test") if val_size else ("train", "test"):
        d = load(name, split, data_dir=data_dir, download=download, val_size=val_size, seed=seed)
        typer.echo(f"{name} [{split}]: {len(d)} images {d.images.dtype} (N, C, H, W) = {d.images.shape}, "
                   f"labels {d.labels.dtype}")
        typer.echo(f"  classes: {' '.join(map(str, d.class_counts()))}")
        typer.echo(f"  sha256:  {d.content_hash()}")
    typer.echo(f"  source:  {d.source}")


@data_app.command("show")
def data_show(name: str, out: Annotated[Path, typer.Option("--out", help="PNG file to write.")],
              split: Split = "test", n: Annotated[int, typer.Option("-n", help="Number of images.")] = 36,
              data_dir: DataDir = None, download: Download = False) -> None:
    """Write a grid of the first N images, in rows of 12 as in the lecture's figures."""
    from aelab.data import load
    from aelab.figures import save_rows

    d = load(name, split, data_dir=data_dir, download=download)
    if n < 1:
        raise typer.BadParameter("must be at least 1", param_hint="-n")
    first = d.subset(n)
    save_rows(out, [(f"X (first {len(first)} {split} images of {name})", first.images)])
    typer.echo(f"wrote {out}  labels: {' '.join(map(str, first.labels))}")


# --------------------------------------------------------------------------- options bound to the config, once
# Every command that trains or reads a trained model takes --preset, --config FILE.toml and --set key=value,
# plus these shortcuts.  Each shortcut is bound here, once, to one config field and shows that field's help.
SHORTCUTS = {
    "data": {"dataset": ("data", "name"), "n_train": ("data", "n_train"), "data_dir": ("data", "data_dir")},
    "train": {"epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
              "seed": ("train", "seed"), "device": ("train", "device")},
    "model": {"d": ("model", "d"), "spec": ("model", "spec"), "model": ("model", "kind"), "beta": ("model", "beta"),
              "decoder": ("model", "decoder")},
    # the studies set d themselves (--dims): only the architecture
    "arch": {"spec": ("model", "spec"), "decoder": ("model", "decoder")},
}


def with_config(*groups: str, preset: str = "default"):
    """Give a command the config options (--preset, --config, --set and the shortcuts of ``groups``) and
    call it with the resolved ``cfg: Config`` instead."""
    import functools
    import inspect
    import typing

    from aelab.config import SECTION_CLASSES, help_of

    def deco(fn):
        sig = inspect.signature(fn, eval_str=True)
        own = [p for name, p in sig.parameters.items() if name != "cfg"]
        extra = [
            inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, default=preset, annotation=Annotated[
                str, typer.Option("--preset", help="Shipped preset the settings start from: default (aelab's "
                                                   "recipe), lecture (the lecture's exact recipe) or quick (the "
                                                   "short demo).")]),
            inspect.Parameter("config_file", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
                Path | None, typer.Option("--config", help="A TOML file of settings ([train] epochs = 2, ...) "
                                                           "applied over the preset.")]),
            inspect.Parameter("set_items", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
                list[str] | None, typer.Option("--set", help="Override one setting: --set train.lr=3e-3 "
                                                              "(repeatable; see aelab reproduce --dry-run).")]),
        ]
        bound: dict[str, tuple[str, str]] = {}
        for group in groups:
            for opt, (section, name) in SHORTCUTS[group].items():
                tp = typing.get_type_hints(SECTION_CLASSES[section])[name]
                base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
                extra.append(inspect.Parameter(opt, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
                    base | None, typer.Option(f"--{opt.replace('_', '-')}",
                                              help=f"{help_of(SECTION_CLASSES[section], name)} [{section}.{name}]")]))
                bound[opt] = (section, name)

        @functools.wraps(fn)
        def wrapper(**kwargs):
            from aelab.config import resolve

            overrides: dict[str, dict] = {}
            for opt, (section, name) in bound.items():
                value = kwargs.pop(opt)
                if value is not None:
                    overrides.setdefault(section, {})[name] = str(value) if isinstance(value, Path) else value
            cfg = resolve(kwargs.pop("preset"), kwargs.pop("config_file"), kwargs.pop("set_items") or (), overrides)
            return fn(cfg=cfg, **kwargs)

        params = own + extra
        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return deco


Out = Annotated[Path, typer.Option("--out", help="Run folder to write.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def _echo_summary(results) -> None:
    from aelab.pipeline import summary_table

    typer.echo("\n" + summary_table(results))


@app.command("reproduce")
@with_config("data", "train", preset="quick")
def reproduce_cmd(cfg, out: Annotated[Path | None, typer.Option("--out", help="Run folder (default: "
                                                                              "runs/<preset>).")] = None,
                  dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved configuration and "
                                                                           "the stages, run nothing.")] = False,
                  stage: Annotated[list[str] | None, typer.Option(
                      "--stage", help="Run only this stage and what it needs (repeatable; --dry-run lists the "
                                      "stages).")] = None,
                  skip: Annotated[list[str] | None, typer.Option(
                      "--skip", help="Leave out a study (decoders or restoration) and the models only it trains; "
                                     "the report leaves its section out (repeatable).")] = None,
                  jobs: Annotated[int, typer.Option(
                      "--jobs", "-j", min=1, help="Stages computed at once, each in its own process, the CPU "
                                                  "threads shared among them (independent trainings side by side; "
                                                  "see docs/benchmarks.md).")] = 1,
                  quiet: Quiet = False) -> None:
    """The whole lecture as cached stages (data, evaluator, autoencoders, PCA, sweep, latent study, operators,
    model table, report): a rerun reuses what is done, a changed setting recomputes what depends on it."""
    from aelab.config import to_toml
    from aelab.pipeline import plan_status, reproduce

    out = out or Path("runs") / cfg.preset
    if dry_run:
        typer.echo(to_toml(cfg))
        for name, status, path in plan_status(cfg, out, stage or None, skip or ()):
            typer.echo(f"{name:32s} {status:8s} {path}")
        return
    results = reproduce(cfg, out, progress=not quiet, echo=typer.echo, targets=stage or None, skip=skip or (),
                        jobs=jobs)
    if _is_main():
        _echo_summary(results)
        if any(r.name == "report" for r in results):
            typer.echo(f"\nreport: {out / 'report' / 'index.html'}")


def _is_main() -> bool:
    """False in the processes of a torchrun group other than rank 0 (rank 0 reports)."""
    from aelab import distributed

    return distributed.is_main()


@app.command("demo")
def demo(out: Out = Path("runs/demo"), quiet: Quiet = False) -> None:
    """The main job: `aelab reproduce --preset quick` on real MNIST (a few minutes on 2 CPU cores)."""
    from aelab.config import resolve
    from aelab.pipeline import reproduce

    results = reproduce(resolve("quick"), out, progress=not quiet, echo=typer.echo)
    _echo_summary(results)
    typer.echo(f"\nreport: {out / 'report' / 'index.html'}")


@app.command("report")
def report_cmd(run: Annotated[Path, typer.Argument(help="A folder written by aelab reproduce.")]) -> None:
    """Re-render a run's report from its stage folders (no training, no data loading)."""
    from aelab.pipeline import rebuild_report

    typer.echo(f"wrote {rebuild_report(run)}")


@app.command("docs")
def docs_cmd(run: Annotated[Path, typer.Option("--run", help="A folder written by aelab reproduce.")],
             out: Annotated[Path, typer.Option("--out", help="Docs folder.")] = Path("docs"),
             name: Annotated[str, typer.Option("--name", help="Page name: docs/NAME.md, figures in "
                                                               "docs/figures/NAME/ (results: figures/report/).")]
             = "results") -> None:
    """Write docs/results.md (and its figures) from a run: text and tables come from its results."""
    from aelab.report import export_results

    if not name.replace("-", "").replace("_", "").isalnum() or name == "report":
        raise typer.BadParameter("letters, digits, - and _ only, and not 'report' (the folder of results.md's "
                                 "figures)", param_hint="--name")
    typer.echo(f"wrote {export_results(run, out, name)}")


# --------------------------------------------------------------------------- models, training, studies
@app.command("timings")
def timings_cmd(forget: Annotated[bool, typer.Option("--forget", help="Delete them: the next runs measure "
                                                                     "again.")] = False) -> None:
    """The speed measurements kept for this machine, from which every run here chooses its precision and how a few
    layers compute (aelab.timings)."""
    from aelab import timings

    if forget:
        typer.echo(f"deleted {timings.path()}" if timings.forget() else f"nothing kept ({timings.path()})")
        return
    kept = timings.stored()
    typer.echo(f"{timings.path()}: {len(kept)} measurement(s)")
    for key, entry in kept.items():
        typer.echo(f"  {key}: {entry['value']} ({entry.get('measured', '?')})")


model_app = typer.Typer(help="Autoencoder architectures.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("summary")
@with_config("model")
def model_summary(cfg, image_size: Annotated[int, typer.Option("--image-size")] = 28,
                  channels: Annotated[int, typer.Option("--channels")] = 1) -> None:
    """The lecture's tensor-size table (1x28x28 -> ... -> dx1x1 -> ... -> 1x28x28), params and MACs per layer."""
    from aelab.experiments import build_model
    from aelab.models.summary import format_table, layer_table

    if image_size < 1 or channels < 1:
        raise typer.BadParameter("--image-size and --channels must be >= 1")
    shape = (channels, image_size, image_size)
    model = build_model(cfg.model, shape, cfg.train.seed)
    rows = layer_table(model, shape)
    typer.echo(" -> ".join("x".join(map(str, s)) for s in [rows[0].in_shape] + [r.out_shape for r in rows]))
    typer.echo(format_table(rows))
    typer.echo(f"latent z: {'x'.join(map(str, model.latent_shape))} = {model.latent_dim} numbers")


@app.command("train")
@with_config("data", "train", "model")
def train_cmd(cfg, out: Out,
              resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest intact checkpoint "
                                                                    "in --out.")] = False,
              allow_change: Annotated[str, typer.Option("--allow-change", help="With --resume: train settings that "
                                                        "may differ from the checkpoint's and then apply, e.g. "
                                                        "train.lr,train.batch_size (epochs may always grow).")] = "",
              quiet: Quiet = False) -> None:
    """Train one model with Adam, checkpointing each epoch: the lecture's autoencoder with its loss
    0.5*sum((x_hat - x)^2)/N, or a VAE / beta-VAE (negative ELBO) on the same architecture."""
    from aelab.experiments import train_and_score

    allowed = tuple(filter(None, (a.strip() for a in allow_change.split(","))))
    m = train_and_score(cfg, out, resume=resume, progress=not quiet, allow_change=allowed)
    if not m:  # a process of a torchrun group other than rank 0: rank 0 reports
        return
    kept = (f"  class kept {m['class_kept']:.4f} (classifier {m['classifier_accuracy']:.4f})"
            if "class_kept" in m else "")
    typer.echo(f"test: mse {m['mse']:.5f}  loss {m['loss']:.3f}  psnr {m['psnr']:.2f} dB{kept}")
    typer.echo(f"wrote {out}/metrics.json and checkpoints in {out}/checkpoints")


def _study(cfg, out: Path, section: str, values: dict, stage: str, table: str, quiet: bool) -> None:
    """Run one study's stages of `aelab reproduce` into ``out`` and print its table; ``values``: the
    command's own options for ``section`` (None where not given)."""
    from aelab.config import override
    from aelab.pipeline import reproduce

    given = {k: v for k, v in values.items() if v is not None}
    cfg = override(cfg, section, **given) if given else cfg
    results = reproduce(cfg, out, progress=not quiet, echo=typer.echo, targets=(stage,))
    if not _is_main():
        return
    folder = next(r for r in results if r.name == stage).path
    typer.echo((folder / table).read_text())
    typer.echo(f"tables and figures in {folder}")


@app.command("sweep")
@with_config("data", "train", "arch")
def sweep_cmd(cfg, out: Out = Path("runs/sweep"),
              dims: Annotated[str | None, typer.Option("--dims", help="Comma-separated latent sizes "
                                                                      "(setting sweep.dims).")] = None,
              quiet: Quiet = False) -> None:
    """CNN autoencoder vs PCA at each d: the sweep's stages of `aelab reproduce` (cached in --out)."""
    _study(cfg, out, "sweep", {"dims": dims}, "sweep", "results.md", quiet)


@app.command("latent")
@with_config("data", "train", "arch")
def latent_cmd(cfg, out: Out = Path("runs/latent"),
               dims: Annotated[str | None, typer.Option("--dims", help="Latent sizes (setting latent.dims).")] = None,
               quiet: Quiet = False) -> None:
    """Interpolations and samples from each density (and VAE priors), scored: the latent study's stages."""
    _study(cfg, out, "latent", {"dims": dims}, "latent", "latent.md", quiet)


@app.command("decoders")
@with_config("data", "train")
def decoders_cmd(cfg, out: Out = Path("runs/decoders"),
                 families: Annotated[str | None, typer.Option(
                     "--families", help="Comma-separated decoder families (setting decoders.families).")] = None,
                 models: Annotated[str | None, typer.Option(
                     "--models", help="Latent sizes and seeds, DxSEEDS, comma-separated, e.g. 8x3,16x1 "
                                      "(setting decoders.models).")] = None,
                 quiet: Quiet = False) -> None:
    """Decoder families (transposed, resize + conv, pixel shuffle) with the same encoder and recipe, compared
    on quality, artefacts and cost: the decoder study's stages of `aelab reproduce` (cached in --out)."""
    _study(cfg, out, "decoders", {"families": families, "models": models}, "decoders", "decoders.md", quiet)


RunOpt = Annotated[Path | None, typer.Option("--run", help="A finished 'aelab train' run folder.")]


@app.command("interpolate")
@with_config("data")
def interpolate_cmd(cfg, run: RunOpt = None,
                    pca: Annotated[int | None, typer.Option("--pca", help="Interpolate in PCA with this d.")] = None,
                    out: Annotated[Path, typer.Option("--out", help="PNG file.")] = Path("interpolation.png"),
                    pairs: Annotated[int, typer.Option(help="Random test pairs (rows).")] = 6,
                    steps: Annotated[int, typer.Option(help="Steps from a = 0 to 1 (columns).")] = 12) -> None:
    """Latent interpolation xi(x, x', a) = g((1 - a) f(x) + a f(x')) between random test pairs."""
    from aelab.experiments import interpolate_job

    if (run is None) == (pca is None):
        raise typer.BadParameter("give exactly one of --run and --pca")
    if pairs < 1 or steps < 2:
        raise typer.BadParameter("--pairs must be >= 1 and --steps >= 2")
    i0, i1 = interpolate_job(cfg, out, run=run, pca=pca, pairs=pairs, steps=steps)
    typer.echo(f"wrote {out}: {pairs} pairs (test indices {list(zip(i0.tolist(), i1.tolist(), strict=True))})")


@app.command("sample")
@with_config()
def sample_cmd(cfg, run: Annotated[Path, typer.Option("--run", help="A finished 'aelab train' run folder.")],
               density: Annotated[str, typer.Option(help="diag, full, gmm, flow or prior (VAE).")] = "diag",
               n: Annotated[int, typer.Option("-n", help="Samples to draw and score.")] = 5000,
               components: Annotated[int | None, typer.Option(
                   help="GMM components (default: by held-out likelihood).")] = None,
               out: Annotated[Path, typer.Option("--out", help="PNG grid of the first 48 samples.")] = Path(
                   "samples.png")) -> None:
    """Fit a density on the training latents of a trained model, sample, decode, and score the samples."""
    from aelab.config import override
    from aelab.experiments import sample_job

    lat = override(cfg, "latent", n_samples=n, gmm_components=components).latent
    scores = sample_job(run, density, lat, out)
    if scores:
        typer.echo("  ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    typer.echo(f"wrote {out}")


# --------------------------------------------------------------------------- restoration
restore_app = typer.Typer(help="Restoration: corruptions, restoring autoencoders, the study against classical "
                                "baselines.", no_args_is_help=True)
app.add_typer(restore_app, name="restore")


@restore_app.command("corrupt")
@with_config("data")
def restore_corrupt(cfg, out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path(
                        "corruptions.png"),
                    corruption: Annotated[list[str] | None, typer.Option(
                        "--corruption", help="name:value[+name:value...], repeatable (default: one of each kind); "
                                             "see aelab.corruptions.")] = None,
                    seed: Annotated[int, typer.Option(help="Seed of the random corruptions.")] = 0) -> None:
    """Each corruption applied to the lecture's 36 test digits, one row of the figure per corruption."""
    from aelab.corruptions import SHOWCASE, parse
    from aelab.data import to_float
    from aelab.experiments import load_splits
    from aelab.figures import save_rows

    chains = [parse(c) for c in (corruption or SHOWCASE)]
    _, test = load_splits(cfg.data)
    x = to_float(test.images[:36])
    save_rows(out, [("X (original samples)", x)] + [(str(c), c(x, seed)) for c in chains])
    typer.echo(f"wrote {out}: " + ", ".join(map(str, chains)))


@restore_app.command("train")
@with_config("data", "train", "model")
def restore_train(cfg, out: Out, corruption: Annotated[str, typer.Option(
                      "--corruption", help="What to undo: name:value[+...], e.g. noise:0.5, or blind (a random one "
                                           "of each kind per image).")],
                  resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest intact checkpoint "
                                                                        "in --out.")] = False,
                  quiet: Quiet = False) -> None:
    """Train a restoring autoencoder on (corrupted x, clean x) pairs, corruptions drawn afresh each batch."""
    from aelab.experiments import train_restorer

    m = train_restorer(cfg, corruption, out, resume=resume, progress=not quiet)
    for name in ("corrupted", "restored"):
        s = m[name]
        kept = f"  class kept {s['class_kept']:.4f}" if "class_kept" in s else ""
        typer.echo(f"{name:9s}: mse {s['mse']:.5f}  psnr {s['psnr']:.2f} dB{kept}")
    typer.echo(f"wrote {out}/metrics.json and checkpoints in {out}/checkpoints")


@restore_app.command("study")
@with_config("data", "train", "model")
def restore_study(cfg, out: Out = Path("runs/restore"), quiet: Quiet = False) -> None:
    """Specialised and blind restoring autoencoders against classical baselines on every corruption level
    (the restore section of the configuration): the restoration stages of `aelab reproduce` (cached in --out)."""
    _study(cfg, out, "restore", {}, "restoration", "restoration-summary.md", quiet)


@restore_app.command("apply")
def restore_apply(run: Annotated[Path, typer.Option("--run", help="A folder written by aelab restore train.")],
                  source: Annotated[Path, typer.Option("--in", help="Folder of PNG/JPEG images to restore.")],
                  dest: Annotated[Path, typer.Option("--out", help="Folder for the restored PNGs.")]) -> None:
    """Restore a folder of your own images; an unreadable file is reported and the others are restored."""
    from aelab.experiments import restore_folder

    written, problems = restore_folder(run, source, dest)
    for problem in problems:
        typer.echo(f"aelab: warning: skipped: {problem}", err=True)
    if not written:
        raise typer.BadParameter(f"none of the images in {source} could be read", param_hint="--in")
    typer.echo(f"restored {len(written)} image(s) into {dest}" + (f"; {len(problems)} skipped" if problems else ""))


# --------------------------------------------------------------------------- the fixed classifiers
evaluator_app = typer.Typer(help="The fixed classifiers that judge reconstructions and samples.",
                            no_args_is_help=True)
app.add_typer(evaluator_app, name="evaluator")


@evaluator_app.command("train")
@with_config("data")
def evaluator_train(cfg, out: Annotated[Path, typer.Option("--out", help="Weights file to write "
                                                                         "(.safetensors; a .json record beside).")],
                    quiet: Quiet = False) -> None:
    """Train a dataset's evaluator with aelab's fixed recipe (how the shipped MNIST / Fashion-MNIST ones were made)."""
    from aelab.evaluator import train_evaluator
    from aelab.experiments import load_full

    if out.suffix != ".safetensors":
        raise typer.BadParameter("--out must end in .safetensors")
    judge = train_evaluator(*load_full(cfg.data), out, progress=not quiet)
    typer.echo(f"{cfg.data.name} evaluator: test accuracy {judge.accuracy:.4f}; wrote {out} and "
               f"{out.with_suffix('.json')}")


@evaluator_app.command("info")
@with_config("data")
def evaluator_info(cfg) -> None:
    """Which classifier judges this dataset, and its test accuracy."""
    from aelab.evaluator import judge_for
    from aelab.experiments import load_full

    judge = judge_for(*load_full(cfg.data))
    if judge is None:
        typer.echo(f"{cfg.data.name}: no class labels, so no evaluator")
    else:
        typer.echo(f"{cfg.data.name}: test accuracy {judge.accuracy:.4f} ({judge.source})")


# --------------------------------------------------------------------------- operators
ops_app = typer.Typer(help="Convolution and transposed-convolution tools: shapes, the matrix view, artefacts, "
                           "step-by-step frames.", no_args_is_help=True)
app.add_typer(ops_app, name="ops")
Kernel = Annotated[int, typer.Option("--kernel", "-k", help="Kernel size w.")]
Stride = Annotated[int, typer.Option("--stride", "-s", help="Stride s.")]


@ops_app.command("shapes")
def ops_shapes(size: Annotated[int, typer.Option("--size", "-W", help="Input size W.")], kernel: Kernel,
               stride: Stride = 1, padding: Annotated[int, typer.Option("--padding", "-p")] = 0,
               dilation: Annotated[int, typer.Option("--dilation", "-d")] = 1) -> None:
    """Output sizes of conv and transposed conv, and whether conv + transposed conv gives back W."""
    from aelab.ops import conv_transpose_output_size, restoring_sizes, round_trip

    rt = round_trip(size, kernel, stride, padding, dilation)
    typer.echo(f"conv:            {size} -> {rt.conv_size}   (floor(({size} + 2*{padding} - {dilation}*({kernel}-1)"
               f" - 1) / {stride}) + 1)")
    if rt.back_size >= 1:
        typer.echo(f"transposed conv: {rt.conv_size} -> {rt.back_size}   (({rt.conv_size} - 1)*{stride} - "
                   f"2*{padding} + {dilation}*({kernel}-1) + 1)")
    typer.echo(f"transposed conv of W itself: {size} -> "
               f"{conv_transpose_output_size(size, kernel, stride, 0, dilation)} (padding 0)")
    if rt.restores:
        typer.echo(f"back-to-back: W = {size} comes back exactly (W = w + s q holds)")
    else:
        typer.echo(f"back-to-back: gives {rt.back_size}, not {size}: the strided convolution never reads the "
                   f"last {rt.unseen} pixel(s); output_padding={rt.output_padding} restores W")
    near = restoring_sizes(kernel, stride, max(1, size - 3 * stride), size + 3 * stride, padding, dilation)
    typer.echo(f"sizes near W that come back exactly: {', '.join(map(str, near))}")


@ops_app.command("matrix")
def ops_matrix(length: Annotated[int, typer.Option("--length", "-n", help="Signal length.")] = 7,
               kernel: Kernel = 3, stride: Stride = 1,
               out: Annotated[Path | None, typer.Option("--out", help="Also save a PNG figure.")] = None) -> None:
    """Print the convolution matrix and its transpose as on the slide (kernel entries named κ1, κ2, ...)."""
    from aelab.ops.plots import format_matrix, plot_matrix, symbolic_matrix

    sym = symbolic_matrix(length, kernel, stride)
    typer.echo(f"convolution ({len(sym)}x{length}): y = M x, a series of inner products")
    typer.echo(format_matrix(sym))
    typer.echo(f"\ntransposed convolution ({length}x{len(sym)}): y = M^T x, a weighted sum of translated kernels")
    typer.echo(format_matrix([list(r) for r in zip(*sym, strict=True)]))
    if out:
        typer.echo(f"wrote {plot_matrix(length, kernel, stride, out)}")


@ops_app.command("artefacts")
def ops_artefacts(out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder for the figures.")],
                  kernel: Kernel = 4, stride: Stride = 3, seed: int = 0) -> None:
    """Coverage map and checkerboard score of a transposed conv, and the upsamplers on a constant input."""
    from aelab.ops.artefacts import coverage, coverage_score
    from aelab.ops.plots import plot_coverage, plot_upsamplers

    cov = coverage(kernel, stride, size=2 * kernel + 2)
    typer.echo(f"coverage (1D, kernel {kernel}, stride {stride}): {' '.join(f'{v:.0f}' for v in cov)}")
    typer.echo(f"checkerboard score: {coverage_score(kernel, stride):.4f}  (0 = even coverage)")
    typer.echo(f"wrote {plot_coverage(kernel, stride, out_dir / f'coverage-k{kernel}-s{stride}.png')}")
    path, scores = plot_upsamplers(out_dir / f"upsamplers-x{stride}-k{kernel}.png", stride, kernel, seed)
    for method, score in scores.items():
        typer.echo(f"  constant input through {method:20s} score {score:.4f}")
    typer.echo(f"wrote {path}")


@ops_app.command("frames")
def ops_frames(out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder for PNG frames and the GIF.")],
               signal: Annotated[str, typer.Option("--input", help="Comma-separated input.")] = "1,2,0,-1,3",
               weights: Annotated[str, typer.Option("--weights", help="Comma-separated kernel.")] = "1,2,-1",
               stride: Stride = 1,
               transposed: Annotated[bool, typer.Option("--transposed", help="Transposed convolution.")] = False
               ) -> None:
    """Step-by-step figures of a 1D convolution or transposed convolution, as PNG frames and a GIF."""
    from aelab.ops.plots import conv_frames, save_frames

    try:
        x, w = ([float(v) for v in t.split(",")] for t in (signal, weights))
    except ValueError:
        raise typer.BadParameter("--input and --weights take comma-separated numbers") from None
    stem = f"{'conv-transpose' if transposed else 'conv'}1d-s{stride}"
    pngs, gif = save_frames(conv_frames(x, w, stride, transposed), out_dir, stem)
    typer.echo(f"wrote {len(pngs)} frames and {gif}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aelab`` script; returns the exit status.

    A user's mistake (an AelabError, a usage error, a path that cannot be read or written) is one line on
    stderr and status 2, never a traceback; an interrupted run says how to continue it.
    """
    from aelab import runs

    args = argv if argv is not None else sys.argv[1:]
    try:
        with runs.running(["aelab", *args]):
            rv = app(args=args, prog_name="aelab", standalone_mode=False)
    except AelabError as e:
        return _fail(str(e))
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}; check the path and its permissions")
    except KeyboardInterrupt:
        typer.echo("aelab: interrupted; finished epochs and stages are kept: run the same command to continue",
                   err=True)
        return 130
    except Exception as e:  # typer's usage errors: bad option values, missing options, --help with no args
        code, message = getattr(e, "exit_code", None), getattr(e, "format_message", None)
        if code is None or message is None:
            raise  # a bug in aelab: keep the traceback
        if type(e).__name__ == "NoArgsIsHelpError":
            typer.echo(message())
            return 0
        return _fail(" ".join(message().split()), code)
    return rv if isinstance(rv, int) else 0


def _fail(message: str, code: int = 2) -> int:
    typer.echo(f"aelab: error: {message}", err=True)
    return code
