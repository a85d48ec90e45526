"""The `fakefinder` command: parses arguments and calls the Python API, nothing more."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="Prepare, train, evaluate and serve deepfake detectors, image classifiers and DX-LLaVA.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigOption = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file.")]
Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(help="Dotted overrides, e.g. data.frames_per_video=16 faces.detector=retinaface"),
]


def _renderer(progress: bool = True):
    """Events as the terminal shows them (on stderr; rank 0 only under torchrun)."""
    from fakefinder.render import RichRenderer

    return RichRenderer(progress=progress)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _user_errors():
    from fakefinder.core.errors import FakefinderError

    return (FakefinderError, FileNotFoundError)


@app.command()
def prepare(
    overrides: Overrides = None,
    config: ConfigOption = None,
    shard: Annotated[Optional[str], typer.Option(help="Process only part i of n (e.g. 0/4).")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Only merge the shards' results into one manifest.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try failed items again.")] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Datasets in their published layouts -> face crops + manifest (resumable)."""
    from fakefinder.config import load_config
    from fakefinder.faces.prepare import SetupError
    from fakefinder.faces.prepare import prepare as run_prepare

    try:
        cfg = load_config(config, overrides or [])
        with _renderer(progress) as events:
            run_prepare(cfg, shard=shard, merge_only=merge, retry_failed=retry_failed, progress=progress, events=events)
    except (*_user_errors(), SetupError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def train(
    overrides: Overrides = None,
    config: ConfigOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from <train.output_dir>/last.pt (or its backup).")] = False,
    resume_from: Annotated[Optional[Path], typer.Option(help="Continue from this checkpoint.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run the output folder holds.")] = False,
) -> None:
    """Train the model kind the config names (`task:`; CPU, one GPU, or many with torchrun)."""
    from fakefinder import api
    from fakefinder.config import load_config

    try:
        cfg = load_config(config, overrides or [])
        with _renderer() as events:
            _prepare_first(cfg, events)
            result = api.train(cfg, resume=resume_from or resume, overwrite=overwrite, events=events)
    except _user_errors() as exc:
        _fail(str(exc))
    stopped = result.get("stopped") if isinstance(result, dict) else getattr(result, "stopped", None)
    if stopped == "interrupted":  # kinds answer a result object or a summary dict
        raise typer.Exit(130)


def _prepare_first(cfg, events) -> None:
    """A detector config with datasets but no manifest yet: prepare them first (rank 0; the others
    wait), so one config and one command go from raw data to a trained model."""
    from fakefinder.tasks.deepfake_detector.kind import manifest_path

    if cfg.task != "deepfake_detector" or cfg.train.manifest is not None or not cfg.data.datasets:
        return
    if manifest_path(cfg).is_file():
        return
    import time

    from fakefinder import api

    if int(os.environ.get("RANK", "0")) == 0:
        from fakefinder.core.events import as_events

        as_events(events).log(f"no manifest at {manifest_path(cfg)}: preparing the datasets first")
        api.prepare(cfg, events=events)
        return
    while not manifest_path(cfg).is_file():  # other torchrun ranks: until rank 0 wrote it (atomically)
        time.sleep(2)


@app.command()
def evaluate(
    overrides: Overrides = None,
    config: ConfigOption = None,
    model: Annotated[Optional[list[Path]], typer.Option("--model", "--checkpoint", "-m", help="A model artifact (folder with model.json, or an older best.pt); repeat to compare.")] = None,
    perturb: Annotated[bool, typer.Option("--perturb", help="Add the robustness table (JPEG 90/70/50, blur, x0.5, noise).")] = False,
) -> None:
    """Metrics, plots and an HTML report for trained models (dispatched on their kind)."""
    from fakefinder import api
    from fakefinder.config import load_config

    try:
        cfg = load_config(config, overrides or [])
        if model:
            cfg.evaluate.models = list(model)
        if perturb and not cfg.evaluate.perturbations:
            cfg.evaluate.perturbations = ["all"]
        with _renderer() as events:
            api.evaluate(cfg, events=events)
    except _user_errors() as exc:
        _fail(str(exc))


@app.command()
def predict(
    inputs: Annotated[Optional[list[Path]], typer.Argument(help="Images, videos, folders or list files.")] = None,
    config: ConfigOption = None,
    model: Annotated[Optional[list[Path]], typer.Option("--model", "--checkpoint", "-m", help="A model artifact (folder with model.json, or an older best.pt); repeat for an ensemble.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Submission CSV.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Config override key=value (repeatable).")] = None,
) -> None:
    """Score new images and videos: a submission CSV (+ optional per-frame details)."""
    from fakefinder import api
    from fakefinder.config import load_config

    try:
        cfg = load_config(config, set_ or [])
        if inputs:
            cfg.predict.inputs = list(inputs)
        if model:
            cfg.predict.models = list(model)
        if output:
            cfg.predict.output = output
        with _renderer() as events:
            api.predict(cfg, events=events)
    except _user_errors() as exc:
        _fail(str(exc))


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="A model artifact (folder with model.json, or an older best.pt).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="model.onnx or model.pt (TorchScript); a folder for a language model's adapter.")],
    tolerance: Annotated[float, typer.Option(help="Largest allowed logit difference in the parity check.")] = 1e-4,
    merged: Annotated[bool, typer.Option("--merged", help="Language models: the adapter merged into a standalone model.")] = False,
) -> None:
    """Export a detector or image classifier to ONNX or TorchScript (with a parity check against PyTorch),
    or a fine-tuned language model's adapter as a folder peft loads (--merged: a standalone model)."""
    from fakefinder.tasks.classification.export import export as run_export
    from fakefinder.tasks import get_task, read_model

    try:
        task = get_task(read_model(model).kind)
        if hasattr(task.functions(), "export"):
            what = "merged model" if merged else "adapter" if task.adapter else "exported"
            typer.echo(f"{task.export(model, output, merged=merged)}: {what}")
            return
        report = run_export(model, output, tolerance=tolerance)
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(f"{report.path}: max |logit difference| {report.max_abs_diff:.2e} over {report.samples} inputs")


@app.command()
def merge(
    model: Annotated[Path, typer.Argument(help="A model artifact with a LoRA adapter (DX-LLaVA, llm_lora, llm_qlora).")],
    output: Annotated[Path, typer.Argument(help="Folder for the merged model artifact.")],
) -> None:
    """Fold a LoRA adapter into its base: a standalone model artifact of the same kind."""
    from fakefinder.tasks import get_task, read_model

    try:
        typer.echo(f"merged: {get_task(read_model(model).kind).merge(model, output)}")
    except _user_errors() as exc:
        _fail(str(exc))


@app.command()
def convert(
    checkpoint: Annotated[Path, typer.Argument(help="A best.pt / last.pt written by an older fakefinder train.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the model artifact.")],
) -> None:
    """Convert an older checkpoint file into a model artifact (read safely: nothing in it runs)."""
    from fakefinder.tasks.deepfake_detector.artifact import convert_checkpoint

    try:
        artifact = convert_checkpoint(checkpoint, output)
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(f"{artifact.path}: {artifact.kind} model artifact (threshold {artifact.threshold:.4f})")


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Folder for the generated data and every result.")] = Path("demo-output"),
    workers: Annotated[int, typer.Option(help="Worker processes for prepare.")] = 2,
) -> None:
    """Run the whole pipeline end to end on data it generates (no download)."""
    from fakefinder.demo import run_demo

    run_demo(output, workers=workers)


@app.command()
def serve(
    data_dir: Annotated[Path, typer.Option(help="The job store, datasets and job folders.")] = Path("fakefinder-data"),
    host: Annotated[str, typer.Option(help="Bind address; anything but loopback needs --token.")] = "127.0.0.1",
    port: int = 8000,
    token: Annotated[Optional[str], typer.Option(help="API token (default: $FAKEFINDER_TOKEN).")] = None,
    executor: Annotated[str, typer.Option(help="local (worker processes here) or ray (a Ray cluster's job API).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(help="The Ray job API, e.g. http://127.0.0.1:8265.")] = None,
    jobs_per_device: Annotated[int, typer.Option(help="Jobs running at once on each device.")] = 1,
    device: Annotated[Optional[list[str]], typer.Option("--device", help="Devices to run jobs on (default: every GPU, else cpu).")] = None,
    dataset_root: Annotated[Optional[list[Path]], typer.Option(help="Folders datasets may be read from (default: <data-dir>/datasets).")] = None,
    output_root: Annotated[Optional[list[Path]], typer.Option(help="Folders exports may be written to (default: <data-dir>/exports).")] = None,
    stop_timeout: Annotated[float, typer.Option(help="Seconds a graceful stop may take before it is forced.")] = 120.0,
    demo_data: Annotated[bool, typer.Option("--demo-data", help="Write tiny datasets (faces, classes, dx) to try it.")] = False,
) -> None:
    """The training platform: REST API (OpenAPI at /docs), job queue and web UI on one port."""
    import logging

    import uvicorn

    from fakefinder.platform.settings import ServeSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        settings = ServeSettings(data_dir=data_dir, host=host, port=port, token=token, executor=executor,
                                 ray_address=ray_address, jobs_per_device=jobs_per_device, devices=device or None,
                                 dataset_roots=dataset_root or [], output_roots=output_root or [],
                                 stop_timeout_s=stop_timeout)
    except (ValueError, *_user_errors()) as exc:
        _fail(str(exc))
    from fakefinder.platform.app import create_app

    app_ = create_app(settings)
    if demo_data:
        from fakefinder.platform.samples import write_demo_datasets

        for name, path in write_demo_datasets(settings.datasets_dir).items():
            typer.echo(f"demo dataset {name}: {path}")
    typer.echo(f"fakefinder serve: http://{host}:{port}/ (API docs at /docs; data in {settings.data_dir})")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


dx = typer.Typer(help="DX-LLaVA, the explainable detector: data, training, evaluation, merge, conversion.",
                 no_args_is_help=True)
app.add_typer(dx, name="dx-llava")


_dx_errors = _user_errors


@dx.command("make-data")
def dx_make_data(
    manifest: Annotated[Path, typer.Argument(help="A prepared manifest (CSV or Parquet).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for <split>.json.")] = Path("output/dx-llava-data"),
    split: Annotated[Optional[list[str]], typer.Option("--split", help="Splits to write (default: all).")] = None,
    max_per_split: Annotated[Optional[int], typer.Option(help="Subsample each split to this many samples.")] = None,
    seed: int = 0,
) -> None:
    """A prepared manifest -> LLaVA conversation JSON (varied questions, answers ending in '### Answer: real|fake')."""
    from fakefinder.tasks.dx_llava.data import make_data

    try:
        written = make_data(manifest, output, split, seed, max_per_split)
    except _dx_errors() as exc:
        _fail(str(exc))
    for name, path in written.items():
        typer.echo(f"{name}: {path}")
    typer.echo(f"image_folder: {(output / 'image_folder.txt').read_text().strip()}")


@dx.command("train")
def dx_train(
    overrides: Overrides = None,
    config: ConfigOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint-* in the output dir.")] = False,
    resume_from: Annotated[Optional[Path], typer.Option(help="Continue from this checkpoint-* folder.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run the output folder holds.")] = False,
) -> None:
    """Train DX-LLaVA (stage 1 projector, or stage 2 full / LoRA / QLoRA); torchrun/deepspeed launch it on many GPUs.
    The same as `fakefinder train` with `task: dx_llava`."""
    import logging

    from fakefinder import api
    from fakefinder.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = load_config(config, ["task=dx_llava", *(overrides or [])])
        with _renderer() as events:
            result = api.train(cfg, resume=str(resume_from) if resume_from else resume, overwrite=overwrite,
                               events=events)
    except _dx_errors() as exc:
        _fail(str(exc))
    if int(os.environ.get("RANK", "0")) == 0:  # one line per run, not per torchrun/deepspeed process
        typer.echo(f"trained {result['steps']} steps in {result['seconds']:.0f} s; saved {result['final']}")


@dx.command("evaluate")
def dx_evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A DX-LLaVA model folder (e.g. output/dx-llava/final).")],
    data: Annotated[Path, typer.Option("--data", help="LLaVA JSON to evaluate on.")],
    image_folder: Annotated[Optional[Path], typer.Option(help="Images are relative to it (default: the JSON's folder).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("output/dx-llava-eval"),
    max_samples: Optional[int] = None,
    explain: Annotated[Optional[int], typer.Option(help="Generate explanations for this many samples (default: all).")] = None,
    no_text: Annotated[bool, typer.Option("--no-text", help="Head only: no generated answers.")] = False,
) -> None:
    """Accuracy / macro-F1 / AUC of the binary head and of the text answer; predictions with explanations."""
    import json

    from fakefinder.tasks.dx_llava.infer import evaluate as run_evaluate

    try:
        metrics = run_evaluate(checkpoint, data, image_folder, output, max_samples, not no_text, explain)
    except _dx_errors() as exc:
        _fail(str(exc))
    typer.echo(json.dumps({k: metrics[k] for k in ("n", "head", "text", "agreement") if k in metrics}, indent=1))


@dx.command("merge")
def dx_merge(
    checkpoint: Annotated[Path, typer.Argument(help="A LoRA / QLoRA DX-LLaVA checkpoint folder.")],
    output: Annotated[Path, typer.Argument(help="Folder for the standalone merged model.")],
) -> None:
    """Fold the LoRA adapter into the language model and save a standalone checkpoint."""
    from fakefinder.tasks.dx_llava.model import merge_lora

    try:
        typer.echo(f"merged: {merge_lora(checkpoint, output)}")
    except _dx_errors() as exc:
        _fail(str(exc))


@dx.command("convert")
def dx_convert(
    source: Annotated[str, typer.Argument(help="Original-format LLaVA (e.g. liuhaotian/llava-v1.5-7b or a folder).")],
    output: Annotated[Path, typer.Argument(help="Folder for the HF-format checkpoint.")],
) -> None:
    """Convert an original LLaVA-1.5 checkpoint to the HF LLaVA format."""
    from fakefinder.tasks.dx_llava.convert import convert_original_to_hf

    try:
        typer.echo(f"converted: {convert_original_to_hf(source, output)}")
    except _dx_errors() as exc:
        _fail(str(exc))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
