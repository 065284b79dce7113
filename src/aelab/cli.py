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
def demo(out: Annotated[Path, typer.Option("--out", help="Run folder to write.")] = Path("runs/demo")) -> None:
    """The main job: the MNIST summary and the lecture's 3x12 grid of the first 36 test digits."""
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
    record(out, config={"job": "demo"}, seed=None, data={f"mnist/{s}": d.content_hash() for s, d in data.items()})
    typer.echo(f"wrote {grid}  labels: {' '.join(map(str, first.labels))}")


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
