"""End-to-end `fakefinder predict` speed: videos per hour against a competition's budget.

    # 12 generated clips, a 224 px EfficientNet-Lite0
    .venv/bin/python benchmarks/predict_speed.py
    .venv/bin/python benchmarks/predict_speed.py --videos /data/dfdc_test --max-videos 40 --model run/model

Generated clips are as hard as real footage (`synthetic.write_footage`: 10 s at 30 fps, a panning
cluttered background, sensor noise, two people, crf 23 with long GOPs) in the mix of the DFDC and
FF++ test sets: 1080p, 720p, 480p and one 1080x1920 portrait stored with rotation metadata. Without
`--model` the benchmark first fine-tunes a 224 px EfficientNet-Lite0 (offline ImageNet weights)
for one short epoch on generated crops: its speed is what counts, not its accuracy. Each setting
given in `--settings` is a whole `fakefinder.predict` run over the same clips (model load
included), so the figures are what a user waits. Reports seconds per video with the decode /
detect / classify split that `predict`'s per-file timing gives, videos per hour, and the hours
for `--test-set` videos against `--budget-h`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

import fakefinder
from fakefinder.config import config_from_dict
from fakefinder.engine.predict import list_inputs
from fakefinder.synthetic import make_prepared_crops, write_footage

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
# (height, width, portrait) cycled over the clips: DFDC's 1080p and portrait clips, FF++'s 480p/720p
MIX = [
    (1080, 1920, False),
    (480, 854, False),
    (720, 1280, False),
    (1080, 1920, False),
    (480, 854, False),
    (1920, 1080, True),
]

SETTINGS = {  # name -> predict.* overrides
    "default": {},
    "file-by-file": {"batch_across_files": False},
    "1-worker": {"num_workers": 1},
    "3-workers": {"num_workers": 3},
    "pytorch": {"backend": "torch"},
}


def make_clips(folder: Path, count: int, seconds: float, fps: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for n in range(count):
        height, width, portrait = MIX[n % len(MIX)]
        path = folder / f"clip{n:02d}_{min(height, width)}p{'_portrait' if portrait else ''}.mp4"
        if not path.exists():
            started = time.perf_counter()
            partial = path.with_name(path.stem + ".partial.mp4")
            write_footage(
                partial,
                num_frames=int(seconds * fps),
                size=(height, width),
                identity=n,
                fake=bool(n % 2),
                fps=fps,
                portrait=portrait,
                seed=200 + n,
            )
            partial.replace(path)
            print(f"  generated {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
        clips.append(path)
    return clips


def train_model(workdir: Path) -> Path:
    """A 224 px EfficientNet-Lite0 fine-tuned briefly on generated crops (faces found by the default
    chain)."""
    model = workdir / "model_run" / "model"
    if (model / "model.json").exists():
        return model
    manifest = make_prepared_crops(workdir / "crops", groups=10, size=224)
    config = config_from_dict(
        {
            "faces": {"size": 224},
            "model": {
                "name": "efficientnet_lite0",
                "pretrained": "package:efficientnet_lite0",
                "image_size": 224,
            },
            "train": {
                "manifest": str(manifest),
                "output_dir": str(workdir / "model_run"),
                "epochs": 1,
                "batch_size": 8,
                "num_workers": 0,
                "channels_last": True,
                "logging": {"tensorboard": False, "plots": False},
            },
        },
        source="benchmark",
    )
    fakefinder.train(config, resume=False, overwrite=True, events=lambda event: None)
    return model


def run(model: Path, inputs: list[Path], output: Path, frames: int, overrides: dict) -> dict:
    config = config_from_dict({}, source="benchmark")  # predict's defaults; faces etc. come from the artifact
    config.predict.models = [model]
    config.predict.inputs = inputs
    config.predict.output = output / "submission.csv"
    config.predict.details = output / "details.csv"
    config.predict.frames_per_video = frames
    for key, value in overrides.items():
        setattr(config.predict, key, value)
    done_at: list[float] = []  # when each file's row was finished

    def on_event(event):
        if event.type == "progress" and event.stage == "predict":
            done_at.append(time.perf_counter())

    started = time.perf_counter()
    result = fakefinder.predict(config, events=on_event)
    wall = time.perf_counter() - started
    table = result.table
    # steady state: the pace between the first and the last finished file (start-up excluded:
    # worker start, model load and export, happen once per run, whatever its length)
    steady = (done_at[-1] - done_at[0]) / (len(done_at) - 1) if len(done_at) > 1 else float("nan")
    return {
        "wall_s": wall,
        "files": len(table),
        "s_per_video": wall / len(table),
        "videos_per_hour": 3600 * len(table) / wall,
        "startup_s": done_at[0] - started if done_at else None,
        "steady_s_per_video": steady,
        "steady_videos_per_hour": 3600 / steady,
        "split_s_per_video": {k: float(table[k].mean()) for k in ("decode_s", "detect_s", "classify_s")},
        "faces": int(table.faces.sum()),
        "frames": int(table.frames.sum()),
        "without_face": int((table.reason != "").sum()),
        "probabilities": table.probability.round(6).tolist(),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="a detector artifact (default: train the benchmark's)"
    )
    parser.add_argument("--clips", type=int, default=12, help="generated clips (default 12)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--videos", type=Path, nargs="+", default=None, help="real mode: folders of videos")
    parser.add_argument("--max-videos", type=int, default=None)
    parser.add_argument("--frames", type=int, default=32, help="frames per video (default 32)")
    parser.add_argument(
        "--settings",
        default="default,file-by-file,1-worker,pytorch",
        help=f"comma list of {','.join(SETTINGS)}",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each setting, taken in turn; the run with the median steady pace is reported "
        "with the range (this machine's speed varies between runs)",
    )
    parser.add_argument(
        "--test-set", type=int, default=4000, help="videos in the competition's test set (DFDC: 4,000)"
    )
    parser.add_argument("--budget-h", type=float, default=3.0)
    parser.add_argument("--workdir", type=Path, default=RESULTS / "predict_speed_work")
    parser.add_argument("--json", type=Path, default=RESULTS / "predict_speed.json")
    return parser


def _inputs(args: argparse.Namespace) -> tuple[list[Path], str]:
    """What predict reads (real videos linked into one folder, or generated clips) and its description."""
    if args.videos:
        inputs = list_inputs(args.videos)[: args.max_videos]
        links = args.workdir / "real_inputs"
        shutil.rmtree(links, ignore_errors=True)
        links.mkdir(parents=True)
        for i, path in enumerate(inputs):
            (links / f"{i:04d}_{path.name}").symlink_to(path.resolve())
        inputs, source = [links], f"{len(inputs)} real file(s) from {', '.join(map(str, args.videos))}"
    else:
        clips = make_clips(args.workdir / "clips", args.clips, args.seconds, args.fps)
        inputs = clips
        source = (
            f"{len(clips)} generated clips ({args.seconds:g} s @ {args.fps} fps: 1080p, 720p, 480p, portrait)"
        )
    return inputs, source


def _print_report(report: dict, source: str, model: Path, args: argparse.Namespace) -> None:
    first = next(iter(report["runs"].values()))
    print(f"\n{source}; {args.frames} frames per video; model {model}")
    print(
        f"{'settings':14}{'s/video':>9}{'steady':>8}{'start s':>8}{'decode':>8}{'detect':>8}{'classify':>9}"
        f"{'videos/h':>10}{'steady/h':>10}{'runs steady/h':>16}{f'{args.test_set} in h':>11}{'faces':>7}"
    )
    for name, r in report["runs"].items():
        split = r["split_s_per_video"]
        print(
            f"{name:14}{r['s_per_video']:>9.2f}{r['steady_s_per_video']:>8.2f}{r['startup_s']:>8.1f}"
            f"{split['decode_s']:>8.2f}{split['detect_s']:>8.2f}{split['classify_s']:>9.2f}"
            f"{r['videos_per_hour']:>10.0f}{r['steady_videos_per_hour']:>10.0f}"
            f"{'/'.join(map(str, r['steady_per_hour_runs'])):>16}{r['test_set_hours']:>11.2f}{r['faces']:>7}"
        )
        if r["probabilities"] != first["probabilities"]:
            diff = max(abs(a - b) for a, b in zip(r["probabilities"], first["probabilities"]))
            print(f"  probabilities differ from the first run's by up to {diff:.2e}")
    print(
        f"(each setting's median run of {max(1, args.repeat)}, the steady pace of every run beside it; "
        f"s/video: the whole run over the clips; steady: the pace from the first finished file to the last, "
        f"start-up (first file's wait) apart; {args.test_set} in h: start-up + {args.test_set} at the steady "
        f"pace; decode/detect/classify: per-file means from predict's timing; decode and detect run in the "
        f"worker process, overlapped with classification; budget {args.budget_h:g} h = "
        f"{args.test_set / args.budget_h:.0f} videos/h)"
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_flush_denormal(True)

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), {os.cpu_count()} CPUs", flush=True)
    inputs, source = _inputs(args)
    model = args.model or train_model(args.workdir)
    report = {"source": source, "model": str(model), "frames_per_video": args.frames, "runs": {}}
    names = list(dict.fromkeys(n.strip() for n in args.settings.split(",") if n.strip()))
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for attempt in range(max(1, args.repeat)):
        for name in names:
            print(f"predict with {name} settings {SETTINGS[name]} (run {attempt + 1}) ...", flush=True)
            runs[name].append(run(model, inputs, args.workdir / f"out_{name}", args.frames, SETTINGS[name]))
    for name, outs in runs.items():
        outs = sorted(outs, key=lambda o: o["steady_videos_per_hour"])
        out = outs[(len(outs) - 1) // 2]  # the median run
        out["steady_per_hour_runs"] = [round(o["steady_videos_per_hour"]) for o in outs]
        out["test_set_hours"] = args.test_set / out["steady_videos_per_hour"] + out["startup_s"] / 3600
        report["runs"][name] = out
    _print_report(report, source, model, args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1))
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
