"""`fakefinder dx-llava ...`: what DX-LLaVA needs beyond the generic commands (train, evaluate,
predict, export and merge are those): training data from a prepared manifest, and original LLaVA-1.5
checkpoints converted to the transformers layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="DX-LLaVA, the explainable deepfake detector: training data from a manifest, LLaVA checkpoint "
    "conversion (train, evaluate, predict and merge are the generic commands).",
    no_args_is_help=True,
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command("make-data")
def make_data(
    manifest: Annotated[Path, typer.Argument(help="A prepared manifest (CSV or Parquet).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for <split>.json.")] = Path(
        "output/dx-llava-data"
    ),
    split: Annotated[
        Optional[list[str]], typer.Option("--split", help="Splits to write (default: all).")
    ] = None,
    max_per_split: Annotated[
        Optional[int], typer.Option(help="Subsample each split to this many samples.")
    ] = None,
    seed: int = 0,
) -> None:
    """A prepared manifest -> LLaVA conversation JSON: each answer written from the evidence of its
    image (the regions its true mask changed, how much of the face, the cues at the mask's edge; for
    a real, what was checked), ending in '### Answer: real|fake'; the evidence is kept with each
    sample, and the true masks in masks/, for `fakefinder evaluate`."""
    from fakefinder.core.errors import FakefinderError
    from fakefinder.tasks.dx_llava.data import make_data as run

    try:
        written = run(manifest, output, split, seed, max_per_split)
    except (FakefinderError, FileNotFoundError) as exc:
        _fail(str(exc))
    for name, path in written.items():
        typer.echo(f"{name}: {path}")
    typer.echo(f"image_folder: {(output / 'image_folder.txt').read_text().strip()}")


@app.command("convert")
def convert(
    source: Annotated[
        str, typer.Argument(help="Original-format LLaVA (e.g. liuhaotian/llava-v1.5-7b or a folder).")
    ],
    output: Annotated[Path, typer.Argument(help="Folder for the HF-format checkpoint.")],
) -> None:
    """Convert an original LLaVA-1.5 checkpoint to the HF LLaVA format."""
    from fakefinder.core.errors import FakefinderError
    from fakefinder.tasks.dx_llava.convert import convert_original_to_hf

    try:
        typer.echo(f"converted: {convert_original_to_hf(source, output)}")
    except (FakefinderError, FileNotFoundError) as exc:
        _fail(str(exc))
