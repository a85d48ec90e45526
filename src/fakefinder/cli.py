"""The `fakefinder` command: parses arguments and calls the Python API, nothing more."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="Prepare, train, evaluate, predict, export and serve deepfake detectors and the other model kinds.",
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


def _noted(config, events):
    """The config, after its notes (renamed keys taken under their new names, sections left out) are shown."""
    from fakefinder.core.events import as_events

    for note in config.notes:
        as_events(events).warning(note, "config")
    return config


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
    merge: Annotated[
        bool, typer.Option("--merge", help="Only merge the shards' results into one manifest.")
    ] = False,
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
            _noted(cfg, events)
            run_prepare(
                cfg,
                shard=shard,
                merge_only=merge,
                retry_failed=retry_failed,
                progress=progress,
                events=events,
            )
    except (*_user_errors(), SetupError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def train(
    overrides: Overrides = None,
    config: ConfigOption = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in the output folder from its latest checkpoint (or its backup).",
        ),
    ] = False,
    resume_from: Annotated[Optional[Path], typer.Option(help="Continue from this checkpoint.")] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the run the output folder holds.")
    ] = False,
) -> None:
    """Train the model kind the config names (`task:`; CPU, one GPU, or many with torchrun)."""
    from fakefinder import api
    from fakefinder.config import load_config

    try:
        cfg = load_config(config, overrides or [])
        with _renderer() as events:
            result = api.train(
                _noted(cfg, events), resume=resume_from or resume, overwrite=overwrite, events=events
            )
    except _user_errors() as exc:
        _fail(str(exc))
    if int(os.environ.get("RANK", "0")) == 0:  # one line per run, not per torchrun process
        where = f"; artifact: {result.artifact}" if result.artifact else ""
        typer.echo(f"{result.kind}: {result.stopped} after {result.steps} step(s){where}")
    if result.interrupted:
        raise typer.Exit(130)


@app.command()
def sweep(
    overrides: Overrides = None,
    config: ConfigOption = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The sweep's folder: its trials, study and best model.")
    ] = Path("output/sweep"),
    device: Annotated[
        Optional[list[str]],
        typer.Option("--device", help="Devices trials run on (default: every GPU, else cpu)."),
    ] = None,
    jobs_per_device: Annotated[int, typer.Option(help="Trials running at once on each device.")] = 1,
    evaluate: Annotated[
        bool, typer.Option(help="Evaluate the best trial's model once at the end (its metrics.json, report).")
    ] = True,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the sweep the output folder holds.")
    ] = False,
) -> None:
    """Search a kind's settings: the config's `sweep:` section names the keys and their ranges, the
    metric, the trials and how many run at once; each trial trains as a job, pruned ones stop early,
    and the best trial's model becomes the sweep's (in --output)."""
    from fakefinder.platform.local_sweep import DONE_CODES, run_sweep

    try:
        job = run_sweep(
            config, overrides or [], output, device, jobs_per_device, evaluate, resume, typer.echo
        )
    except _user_errors() as exc:
        _fail(str(exc))
    result = job["result"] or {}
    best = result.get("best")
    if best:
        typer.echo(f"best: trial {best['number']} ({best['value']:.6g}) {best['params']}")
    for key in ("artifact", "metrics_file", "report"):
        if result.get(key):
            typer.echo(f"{key}: {result[key]}")
    if job["state"] in ("queued", "running"):  # left before it ended (its log said every other end)
        typer.echo(f"sweep {job['state']}: continue it with --resume")
    code = DONE_CODES.get(job["state"], 1)
    if code:
        raise typer.Exit(code)


@app.command()
def evaluate(
    overrides: Overrides = None,
    config: ConfigOption = None,
    model: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--model",
            "--checkpoint",
            "-m",
            help="A model artifact (folder with model.json, or an older best.pt); repeat to compare.",
        ),
    ] = None,
    perturb: Annotated[
        bool, typer.Option("--perturb", help="Add the robustness table (JPEG 90/70/50, blur, x0.5, noise).")
    ] = False,
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
            api.evaluate(_noted(cfg, events), events=events)
    except _user_errors() as exc:
        _fail(str(exc))


@app.command()
def predict(
    inputs: Annotated[
        Optional[list[Path]], typer.Argument(help="Images, videos, folders or list files.")
    ] = None,
    config: ConfigOption = None,
    model: Annotated[
        Optional[list[Path]],
        typer.Option(
            "--model",
            "--checkpoint",
            "-m",
            help="A model artifact (folder with model.json, or an older best.pt); repeat for an ensemble.",
        ),
    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Submission CSV.")] = None,
    heatmaps: Annotated[
        bool,
        typer.Option(
            "--heatmaps",
            help="Also write where the model looked (heatmaps/ beside the submission; predict.heatmaps).",
        ),
    ] = False,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Config override key=value (repeatable).")
    ] = None,
) -> None:
    """Score new images and videos: a submission CSV (+ optional per-frame details and heatmaps)."""
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
        if heatmaps:
            cfg.predict.heatmaps = True
        with _renderer() as events:
            api.predict(_noted(cfg, events), events=events)
    except _user_errors() as exc:
        _fail(str(exc))


@app.command()
def export(
    model: Annotated[
        Path, typer.Argument(help="A model artifact (folder with model.json, or an older best.pt).")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="model.onnx or model.pt (TorchScript) for a deepfake detector or image classifier; a folder "
            "for an adapter.",
        ),
    ],
    tolerance: Annotated[
        float, typer.Option(help="Largest allowed output difference in the parity check.")
    ] = 1e-4,
    merged: Annotated[
        bool, typer.Option("--merged", help="LoRA kinds: the adapter merged into a standalone model.")
    ] = False,
) -> None:
    """Export a model in its field's own format, as its kind does it: a deepfake detector or image
    classifier to ONNX or TorchScript (with a parity check against PyTorch), a LoRA adapter as a folder
    peft or diffusers loads (--merged: a standalone model)."""
    from fakefinder.tasks import get_task, read_model

    try:
        exported = get_task(read_model(model).kind).export(model, output, merged=merged, tolerance=tolerance)
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(f"{exported.path}: {exported.note}")


@app.command()
def merge(
    model: Annotated[Path, typer.Argument(help="A model artifact with a LoRA adapter.")],
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
    checkpoint: Annotated[
        Path, typer.Argument(help="A model file from an older fakefinder (e.g. a best.pt from train).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the model artifact.")],
) -> None:
    """Convert a model file from an older fakefinder into a model artifact (read safely: nothing in it
    runs)."""
    from fakefinder.core.artifact import write_converted
    from fakefinder.tasks import read_model

    try:
        artifact = write_converted(read_model(checkpoint), output)
    except _user_errors() as exc:
        _fail(str(exc))
    threshold = f" (threshold {artifact.threshold:.4f})" if artifact.threshold is not None else ""
    typer.echo(f"{artifact.path}: {artifact.kind} model artifact{threshold}")


@app.command()
def demo(
    output: Annotated[Path, typer.Option(help="Folder for the generated data and every result.")] = Path(
        "demo-output"
    ),
    workers: Annotated[int, typer.Option(help="Worker processes for prepare.")] = 2,
    data_only: Annotated[
        bool,
        typer.Option(
            "--data-only",
            help="Only generate the datasets: <output>/data/ffpp, dfdc, unseen (videos), and each kind's "
            "tiny dataset (faces, classes, dx, instructions, shapes, captions), e.g. for the guides' "
            "quick runs.",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline end to end on data it generates (no download)."""
    from fakefinder.demo import make_demo_data, run_demo

    if data_only:
        from fakefinder.platform.samples import write_demo_datasets

        made = {**make_demo_data(output / "data"), **write_demo_datasets(output / "data")}
        for name, folder in made.items():
            typer.echo(f"{name}: {folder}")
        return
    run_demo(output, workers=workers)


serve_app = typer.Typer(
    help="The training platform: REST API (OpenAPI at /docs), job queue and web UI on one port; "
    "`serve token ...` manages its API tokens."
)
token_app = typer.Typer(
    help="Named API tokens, each with a role: admin (everything, manages tokens), member (starts jobs; "
    "changes only their own), viewer (reads only). Shown once, stored as a SHA-256 hash."
)
serve_app.add_typer(token_app, name="token")
app.add_typer(serve_app, name="serve")
DataDir = Annotated[Path, typer.Option(help="The job store, datasets and job folders.")]


@serve_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    data_dir: DataDir = Path("fakefinder-data"),
    host: Annotated[
        str, typer.Option(help="Bind address; anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: int = 8000,
    token: Annotated[
        Optional[str],
        typer.Option(help="An admin API token (default: $FAKEFINDER_TOKEN); named ones: `serve token add`."),
    ] = None,
    executor: Annotated[
        str, typer.Option(help="local (worker processes here) or ray (a Ray cluster's job API).")
    ] = "local",
    ray_address: Annotated[
        Optional[str], typer.Option(help="The Ray job API, e.g. http://127.0.0.1:8265.")
    ] = None,
    jobs_per_device: Annotated[int, typer.Option(help="Jobs running at once on each device.")] = 1,
    warm_workers: Annotated[
        bool,
        typer.Option(
            help="Fork local workers from a process that has imported the ML libraries already (each "
            "job starts seconds sooner); --no-warm-workers: a fresh Python process per job."
        ),
    ] = True,
    device: Annotated[
        Optional[list[str]],
        typer.Option("--device", help="Devices to run jobs on (default: every GPU, else cpu)."),
    ] = None,
    dataset_root: Annotated[
        Optional[list[Path]],
        typer.Option(help="Folders datasets may be read from (default: <data-dir>/datasets)."),
    ] = None,
    output_root: Annotated[
        Optional[list[Path]],
        typer.Option(help="Folders exports may be written to (default: <data-dir>/exports)."),
    ] = None,
    stop_timeout: Annotated[
        float, typer.Option(help="Seconds a graceful stop may take before it is forced.")
    ] = 120.0,
    poll_interval: Annotated[
        float, typer.Option(help="Seconds between the queue's looks at its workers (new output, ends).")
    ] = 0.5,
    max_jobs_per_user: Annotated[
        Optional[int],
        typer.Option(help="Queued and running jobs one user may have at once (default: no limit)."),
    ] = None,
    mlflow_uri: Annotated[
        Optional[str],
        typer.Option(
            help="Where jobs naming the mlflow tracker are logged, e.g. a team server http://mlflow:5000 "
            "(default: a local store, <data-dir>/mlflow.db)."
        ),
    ] = None,
    webhook: Annotated[
        Optional[list[str]],
        typer.Option(
            "--webhook",
            help="NAME=URL: a webhook finished jobs notify (repeatable; a job picks among the names).",
        ),
    ] = None,
    webhook_secret: Annotated[
        Optional[str],
        typer.Option(help="The key webhook bodies are signed with (default: $FAKEFINDER_WEBHOOK_SECRET)."),
    ] = None,
    public_url: Annotated[
        Optional[str], typer.Option(help="The address users reach the server at (the link in a webhook).")
    ] = None,
    demo_data: Annotated[
        bool,
        typer.Option("--demo-data", help="Write tiny datasets (faces, classes, dx, ...) to try it."),
    ] = False,
) -> None:
    """The training platform: REST API (OpenAPI at /docs), job queue and web UI on one port."""
    if ctx.invoked_subcommand is not None:
        return
    import logging

    import uvicorn

    from fakefinder.platform.settings import ServeSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        settings = ServeSettings(
            data_dir=data_dir,
            host=host,
            port=port,
            token=token,
            executor=executor,
            ray_address=ray_address,
            jobs_per_device=jobs_per_device,
            warm_workers=warm_workers,
            devices=device or None,
            dataset_roots=dataset_root or [],
            output_roots=output_root or [],
            stop_timeout_s=stop_timeout,
            poll_interval_s=poll_interval,
            max_jobs_per_user=max_jobs_per_user,
            mlflow_uri=mlflow_uri,
            webhooks=_named_urls(webhook or []),
            webhook_secret=webhook_secret,
            public_url=public_url,
        )
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


def _named_urls(values: list[str]) -> dict[str, str]:
    named = {}
    for value in values:
        name, sep, url = value.partition("=")
        if not sep or not name or not url:
            _fail(f"--webhook {value}: give it as NAME=URL")
        named[name] = url
    return named


def _token_store(data_dir: Path):
    from fakefinder.platform.store import JobStore

    return JobStore(Path(data_dir) / "platform.sqlite")


@token_app.command("add")
def token_add(
    name: Annotated[str, typer.Argument(help="Who holds it (letters, digits, _ . @ -).")],
    role: Annotated[str, typer.Option(help="admin, member or viewer.")] = "member",
    data_dir: DataDir = Path("fakefinder-data"),
) -> None:
    """Add a token and print it (the only time it is shown)."""
    from fakefinder.platform.routes.users import check_token_name

    try:
        token = _token_store(data_dir).add_token(check_token_name(name), role, created_by="cli")
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(token)
    typer.echo(f"{name} ({role}): send 'Authorization: Bearer <token>'; it is not shown again", err=True)


@token_app.command("list")
def token_list(
    data_dir: DataDir = Path("fakefinder-data"),
    revoked: Annotated[bool, typer.Option("--revoked", help="Also list revoked tokens.")] = False,
) -> None:
    """The tokens: name, role, created, last used (never the tokens themselves)."""
    import time

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"

    for row in _token_store(data_dir).tokens(include_revoked=revoked):
        state = f"  revoked {when(row['revoked_at'])}" if row["revoked_at"] else ""
        typer.echo(
            f"{row['name']:<24} {row['role']:<7} created {when(row['created_at'])}  "
            f"last used {when(row['last_used_at'])}{state}"
        )


@token_app.command("revoke")
def token_revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    data_dir: DataDir = Path("fakefinder-data"),
) -> None:
    """Revoke a token: a running server refuses it (401) from its next request."""
    if not _token_store(data_dir).revoke_token(name):
        _fail(f"no active token named {name!r} in {data_dir}")
    typer.echo(f"revoked {name}")


def _kind_commands() -> None:
    """Each kind's own commands (`fakefinder <kind with dashes> ...`), for what the generic ones cannot do."""
    from fakefinder.tasks import kinds

    for kind in kinds():
        commands = kind.commands()
        if commands is not None:
            app.add_typer(commands, name=kind.name.replace("_", "-"))


_kind_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
