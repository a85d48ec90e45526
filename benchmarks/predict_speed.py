"""End-to-end `fakefinder predict` speed on generated 720p clips (10 s, 30 fps; 32 frames each).

    .venv/bin/python benchmarks/predict_speed.py --checkpoint output/dfdc-faces-cpu/model

Reports seconds per video, the split between decode, detect and classify, and videos/hour against
the competition budget (the DFDC test set: 4,000 videos in under 3 hours).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import fakefinder
from fakefinder.data.synthetic import write_video
from fakefinder.config import config_from_dict
from fakefinder.infer.scoring import load_detector

HERE = Path(__file__).resolve().parent


def make_clips(folder: Path, count: int, seconds: float, fps: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for n in range(count):
        path = folder / f"clip{n:02d}.mp4"
        if not path.exists():
            write_video(path, num_frames=int(seconds * fps), size=(720, 1280), identity=n, fake=bool(n % 2),
                        fps=fps, face_px=160)
        clips.append(path)
    return clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="output/dfdc-faces-cpu/model")
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="processes decoding + detecting")
    parser.add_argument("--test-set", type=int, default=4000, help="videos in the competition's test set")
    parser.add_argument("--workdir", default=str(HERE / "results" / "predict_clips"))
    args = parser.parse_args()

    clips = make_clips(Path(args.workdir), args.videos, args.seconds, args.fps)
    config = config_from_dict(load_detector(args.checkpoint).artifact.training["config"])  # the run that made it
    config.predict.models = [Path(args.checkpoint)]
    config.predict.inputs = [Path(args.workdir)]
    config.predict.output = HERE / "results" / "predict_speed_submission.csv"
    config.predict.frames_per_video = args.frames
    config.predict.num_workers = args.workers
    config.faces.fallback = []  # unused on these clips (MTCNN finds every face): keep the timing pure
    started = time.perf_counter()
    result = fakefinder.predict(config)
    wall = time.perf_counter() - started
    per_video = wall / len(clips)
    timing = {k: v / len(clips) for k, v in result.timing.items()}
    per_hour = 3600 / per_video
    report = {
        "videos": len(clips), "resolution": "1280x720", "seconds_each": args.seconds, "frames_per_video": args.frames,
        "workers": args.workers, "wall_s": wall, "s_per_video": per_video, "split_s_per_video": timing,
        "videos_per_hour": per_hour, "test_set_hours": args.test_set / per_hour,
        "faces_found": int(result.table.faces.sum()), "files_without_face": int((result.table.reason != "").sum()),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "predict_speed.json").write_text(json.dumps(report, indent=1))
    print(f"\n{len(clips)} videos 720p x {args.seconds:.0f} s, {args.frames} frames each, {args.workers} worker(s):")
    print(f"  {per_video:.2f} s/video = decode {timing['decode_s']:.2f} + detect {timing['detect_s']:.2f} + "
          f"classify {timing['classify_s']:.2f} (+ {per_video - sum(timing.values()):.2f} other)")
    print(f"  {per_hour:.0f} videos/hour -> {args.test_set} videos in {report['test_set_hours']:.2f} h (budget 3 h)")


if __name__ == "__main__":
    main()
