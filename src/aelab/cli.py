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


@app.command("demo")
def demo(out: Annotated[Path, typer.Option("--out", help="Run folder to write.")] = Path("runs/demo"),
         dims: Annotated[str, typer.Option("--dims", help="Latent sizes of the short sweep.")] = "2,8,32",
         epochs: Annotated[int, typer.Option(help="Epochs per autoencoder (the full sweep uses 10).")] = 1,
         quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False) -> None:
    """The main job: MNIST summary, the lecture's 3x12 grid, then a short CNN-vs-PCA sweep on all 60000 digits."""
    from aelab.data import load
    from aelab.figures import save_rows
    from aelab.runs import record

    data = {split: load("mnist", split) for split in ("train", "test")}
    for split, d in data.items():
        typer.echo(f"mnist [{split}]: {d.images.shape} {d.images.dtype}, classes "
                   f"{' '.join(map(str, d.class_counts()))}, sha256 {d.content_hash()[:16]}")
    typer.echo(f"source: {data['test'].source}")
    first = data["test"].subset(36)
    grid = save_rows(out / "mnist-test-36.png", [("X (original samples)", first.images)])
    record(out, config={"job": "demo"}, seed=None, data={f"mnist/{s}": d.content_hash() for s, d in data.items()},
           name="data.json")
    typer.echo(f"wrote {grid}  labels: {' '.join(map(str, first.labels))}")
    typer.echo(f"\nshort sweep (d = {dims}, {epochs} epoch(s); the full one: aelab sweep --out runs/sweep):")
    sweep_cmd(out=out / "sweep", dims=dims, epochs=epochs, quiet=quiet)


# --------------------------------------------------------------------------- models, training, sweep
model_app = typer.Typer(help="Autoencoder architectures.", no_args_is_help=True)
app.add_typer(model_app, name="model")

SpecOpt = Annotated[str | None, typer.Option("--spec", help="Encoder layers channels:kernel:stride[:padding], "
                                                             "comma-separated; default: the lecture's.")]
Epochs = Annotated[int, typer.Option(help="Training epochs.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Mini-batch size.")]
Lr = Annotated[float, typer.Option("--lr", help="Adam learning rate.")]
Seed = Annotated[int, typer.Option(help="Seed of the initial weights and of the data order.")]
Device = Annotated[str, typer.Option(help="auto (GPU when present), cpu or cuda.")]
NTrain = Annotated[int | None, typer.Option("--n-train", help="Use the first N training images only.")]
Dataset = Annotated[str, typer.Option("--dataset", help="Dataset name (see 'aelab data list').")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]


def _spec(text: str | None):
    from aelab.models import LECTURE_SPEC, parse_spec

    return parse_spec(text) if text else LECTURE_SPEC


@model_app.command("summary")
def model_summary(d: Annotated[int, typer.Option("--d", help="Latent channels d.")] = 8, spec: SpecOpt = None,
                  image_size: Annotated[int, typer.Option("--image-size")] = 28,
                  channels: Annotated[int, typer.Option("--channels")] = 1) -> None:
    """The lecture's tensor-size table (1x28x28 -> ... -> dx1x1 -> ... -> 1x28x28), params and MACs per layer."""
    from aelab.models import AutoEncoder
    from aelab.models.summary import format_table, layer_table

    model = AutoEncoder(d, _spec(spec), in_channels=channels, image_size=image_size)
    rows = layer_table(model, (channels, image_size, image_size))
    typer.echo(" -> ".join("x".join(map(str, s)) for s in [rows[0].in_shape] + [r.out_shape for r in rows]))
    typer.echo(format_table(rows))
    typer.echo(f"latent z: {'x'.join(map(str, model.latent_shape))} = {model.latent_dim} numbers")


def _train_config(epochs, batch_size, lr, seed, device):
    from aelab.train import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device)


@app.command("train")
def train_cmd(out: Annotated[Path, typer.Option("--out", help="Run folder.")],
              d: Annotated[int, typer.Option("--d", help="Latent channels d.")] = 8, spec: SpecOpt = None,
              epochs: Epochs = 10, batch_size: BatchSize = 100, lr: Lr = 1e-3, seed: Seed = 0,
              device: Device = "auto", dataset: Dataset = "mnist", n_train: NTrain = None,
              resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint "
                                                                    "in --out.")] = False,
              model: Annotated[str, typer.Option("--model", help="ae (the lecture's autoencoder) or vae.")] = "ae",
              beta: Annotated[float, typer.Option("--beta", help="VAE: weight of the KL term.")] = 1.0,
              quiet: Quiet = False) -> None:
    """Train one model with Adam, checkpointing each epoch: the lecture's autoencoder with its loss
    0.5*sum((x_hat - x)^2)/N, or a VAE / beta-VAE (negative ELBO) on the same architecture."""
    from aelab.experiments import AEConfig, DataConfig, judge_for, train_autoencoder
    from aelab.train import latest_checkpoint

    if not resume and latest_checkpoint(out) is not None:
        raise typer.BadParameter(f"{out} already holds checkpoints; pass --resume or choose another --out")
    data = DataConfig(dataset, n_train)
    cfg = AEConfig(d=d, spec=_spec(spec), model=model, beta=beta, data=data,
                   train=_train_config(epochs, batch_size, lr, seed, device))
    _, m = train_autoencoder(cfg, out, resume=resume, progress=not quiet, judge=judge_for(data, not quiet))
    kept = (f"  digit kept {m['digit_kept']:.4f} (classifier {m['classifier_accuracy']:.4f})"
            if "digit_kept" in m else "")
    typer.echo(f"test: mse {m['mse']:.5f}  loss {m['loss']:.3f}  psnr {m['psnr']:.2f} dB{kept}")
    typer.echo(f"wrote {out}/metrics.json and checkpoints in {out}/checkpoints")


@app.command("sweep")
def sweep_cmd(out: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("runs/sweep"),
              dims: Annotated[str, typer.Option("--dims", help="Comma-separated latent sizes.")] = "2,4,8,16,32",
              spec: SpecOpt = None, epochs: Epochs = 10, batch_size: BatchSize = 100, lr: Lr = 1e-3,
              seed: Seed = 0, device: Device = "auto", dataset: Dataset = "mnist", n_train: NTrain = None,
              quiet: Quiet = False) -> None:
    """CNN autoencoder vs PCA at each d: results table (CSV, markdown) and the lecture's figure per d."""
    from aelab.experiments import DataConfig, SweepConfig, sweep

    try:
        dim_list = tuple(int(v) for v in dims.split(","))
    except ValueError:
        raise typer.BadParameter(f"{dims!r} is not a comma-separated list of integers", param_hint="--dims") from None
    cfg = SweepConfig(dims=dim_list, spec=_spec(spec), data=DataConfig(dataset, n_train),
                      train=_train_config(epochs, batch_size, lr, seed, device))
    sweep(cfg, out, progress=not quiet)
    typer.echo((out / "results.md").read_text())
    typer.echo(f"wrote {out}/results.csv, {out}/results.md and {out}/figures/")


# --------------------------------------------------------------------------- the latent space
RunDir = Annotated[Path, typer.Option("--run", help="A finished 'aelab train' run folder.")]


@app.command("interpolate")
def interpolate_cmd(run: Annotated[Path | None, typer.Option("--run", help="A finished 'aelab train' run folder "
                                                                            "(or use --pca).")] = None,
                    pca: Annotated[int | None, typer.Option("--pca", help="Interpolate in PCA with this d.")] = None,
                    out: Annotated[Path, typer.Option("--out", help="PNG file.")] = Path("interpolation.png"),
                    pairs: Annotated[int, typer.Option(help="Random test pairs (rows).")] = 6,
                    steps: Annotated[int, typer.Option(help="Steps from a = 0 to 1 (columns).")] = 12,
                    seed: Seed = 0) -> None:
    """Latent interpolation xi(x, x', a) = g((1 - a) f(x) + a f(x')) between random test pairs."""
    from aelab.data import load, to_float
    from aelab.figures import save_rows
    from aelab.latent import interpolate, random_pairs

    if (run is None) == (pca is None):
        raise typer.BadParameter("give exactly one of --run and --pca")
    if run is not None:
        from aelab.experiments import load_trained

        codec, cfg = load_trained(run)
        name, test = f"{cfg.model.upper()} d = {cfg.d}", load(cfg.data.name, "test")
    else:
        from aelab.pca import PCA

        codec = PCA(pca, seed=seed).fit(to_float(load("mnist", "train").images))
        name, test = f"PCA d = {pca}", load("mnist", "test")
    x = to_float(test.images)
    i0, i1 = random_pairs(len(x), pairs, seed)
    grid = interpolate(codec, x[i0], x[i1], steps).flatten(0, 1)
    save_rows(out, [("", grid)], ncols=steps, title=f"{name} interpolation")
    typer.echo(f"wrote {out}: {pairs} pairs (test indices {list(zip(i0.tolist(), i1.tolist(), strict=True))})")


@app.command("sample")
def sample_cmd(run: RunDir,
               density: Annotated[str, typer.Option(help="diag, full, gmm, flow or prior (VAE).")] = "diag",
               n: Annotated[int, typer.Option("-n", help="Samples to draw and score.")] = 5000,
               components: Annotated[int | None, typer.Option(help="GMM components (default: by BIC).")] = None,
               out: Annotated[Path, typer.Option("--out", help="PNG grid of the first 48 samples.")] = Path(
                   "samples.png"),
               seed: Seed = 0) -> None:
    """Fit a density on the training latents of a trained model, sample, decode, and score the samples."""
    from aelab.data import load, to_float
    from aelab.experiments import judge_for, load_trained
    from aelab.figures import save_rows
    from aelab.latent import decode_all, encode_all, make_density
    from aelab.quality import Reference, sample_scores

    codec, cfg = load_trained(run)
    x_train = to_float(load(cfg.data.name, "train").images)
    options = {"n_components": components} if density == "gmm" else {}
    dens = make_density(density, seed=seed, **options).fit(encode_all(codec, x_train))
    x = decode_all(codec, dens.sample(n, seed=seed))
    save_rows(out, [(f"{cfg.model.upper()} d = {cfg.d}, samples from {density}", x[:48])])
    judge = judge_for(cfg.data)
    if judge is not None:
        s = sample_scores(Reference.build(judge, x_train), x)
        typer.echo("  ".join(f"{k} {v:.4f}" for k, v in s.items()))
    typer.echo(f"wrote {out}")


@app.command("latent")
def latent_cmd(out: Annotated[Path, typer.Option("--out", help="Study folder.")] = Path("runs/latent"),
               models: Annotated[Path | None, typer.Option("--models", help="Folder with ae-d{d} / vae-d{d} runs "
                                                                              "(missing ones are trained there); "
                                                                              "default: --out.")] = None,
               dims: Annotated[str, typer.Option("--dims")] = "8,16,32",
               densities: Annotated[str, typer.Option("--densities")] = "diag,full,gmm,flow",
               vae: Annotated[list[str] | None, typer.Option("--vae", help="BETA@D1,D2,...: a VAE (beta 1) or "
                                                                           "beta-VAE per latent size; repeat.")] = None,
               epochs: Epochs = 10, n: Annotated[int, typer.Option("-n", help="Samples per row.")] = 5000,
               seed: Seed = 0, quiet: Quiet = False) -> None:
    """Interpolations, samples from each density (and VAE priors), scored: FID-MNIST, confident share, ..."""
    from aelab.experiments import LatentConfig, latent_study

    try:
        dim_list = tuple(int(v) for v in dims.split(","))
        vaes = tuple((float(b), tuple(int(v) for v in ds.split(","))) for b, ds in
                     (item.split("@") for item in (vae if vae is not None else ["1@" + dims, "4@16"])))
    except ValueError:
        raise typer.BadParameter("--dims takes 8,16,32 and --vae takes BETA@D1,D2 (e.g. 1@8,16,32)") from None
    cfg = LatentConfig(dims=dim_list, densities=tuple(filter(None, densities.split(","))), vaes=vaes,
                       train=_train_config(epochs, 100, 1e-3, seed, "auto"), n_samples=n, seed=seed)
    latent_study(cfg, out, models, progress=not quiet)
    typer.echo((out / "latent.md").read_text())


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
    """Entry point of the ``aelab`` script; returns the exit status."""
    try:
        app(args=argv if argv is not None else sys.argv[1:], prog_name="aelab")
    except SystemExit as e:  # typer's own exit: usage errors (2), --help (0)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except AelabError as e:
        typer.echo(f"aelab: error: {e}", err=True)
        return 2
    return 0
