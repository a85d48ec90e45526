"""Benchmark: peak memory of `prepare()` stays flat as the number and the length of videos grow.

Each configuration (videos x seconds) runs `prepare()` inline (`num_workers=0`) in a fresh Python
process, which reports its own peak RSS: `ru_maxrss` from `resource.getrusage(RUSAGE_SELF)` and
the kernel's high-water mark `VmHWM` of /proc/self/status. A sampling thread also records the RSS
after the first finished video and at the end, so a slow leak shows even under a flat peak. A
baseline child (imports + the default detector chain loaded + one warm-up detection, no video)
shows the fixed cost.

    python benchmarks/prepare_memory.py                           # 4x5 s, 16x5 s, 4x40 s at 480p
    python benchmarks/prepare_memory.py --configs 2x2,8x2,2x16    # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

RESOLUTIONS = {"1080p": (1080, 1920, 250), "720p": (720, 1280, 170), "480p": (480, 854, 110)}


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _hwm_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _maxrss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------------------------------------
# the child: one prepare() run, measured from inside


def child(spec: dict) -> dict:
    import torch

    torch.set_flush_denormal(True)
    from fakefinder.config import config_from_dict

    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.perf_counter(), _rss_mb()))
            stop.wait(0.05)

    if spec.get("baseline"):
        import numpy as np

        from fakefinder.config import FacesConfig
        from fakefinder.faces.detectors import DetectorChain
        from fakefinder.faces.prepare import prepare  # the same imports as a real run

        chain = DetectorChain(FacesConfig(detect_max_side=spec["max_side"], min_face_px=spec["min_face_px"]))
        chain.verify()  # every detector of the default chain loaded, as a run may need them all
        height, width = spec["size"]
        chain.detect([np.zeros((height, width, 3), np.uint8)])  # a blank frame: each detector runs
        return {
            "peak_rss_mb": _maxrss_mb(),
            "vm_hwm_mb": _hwm_mb(),
            "rss_end_mb": _rss_mb(),
            "wall_s": 0.0,
            "frames_sampled": 0,
            "crops": 0,
            "items_failed": 0,
        }

    from fakefinder.faces.prepare import prepare

    config = config_from_dict(
        {
            "data": {
                "datasets": [{"name": "mem", "layout": "folder", "root": spec["root"]}],
                "frames_per_video": spec["frames"],
                "split": {"train": 1.0, "val": 0.0, "test": 0.0},
            },
            "faces": {"detect_max_side": spec["max_side"], "min_face_px": spec["min_face_px"]},
            "prepare": {"output_dir": spec["output"], "num_workers": spec["workers"]},
        },
        source="benchmark",
    )
    # the RSS when each video's record appears: after the first vs after the last video shows
    # growth per video (the end of the run also imports pandas for the manifest, so it is not used)
    records = Path(spec["output"]) / ".records"
    after_video: list[float] = []

    def watch_records():
        seen = 0
        while not stop.is_set():
            count = sum(1 for _ in records.rglob("*.json")) if records.is_dir() else 0
            if count > seen:
                seen = count
                after_video.append(_rss_mb())
            stop.wait(0.05)

    threads = [
        threading.Thread(target=sample, daemon=True),
        threading.Thread(target=watch_records, daemon=True),
    ]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    result = prepare(config, progress=False, events=lambda event: None)
    wall = time.perf_counter() - started
    stop.set()
    for thread in threads:
        thread.join()
    out = {
        "peak_rss_mb": _maxrss_mb(),
        "vm_hwm_mb": _hwm_mb(),
        "children_peak_rss_mb": _maxrss_mb(resource.RUSAGE_CHILDREN),
        "rss_after_first_video_mb": after_video[0] if after_video else float("nan"),
        "rss_after_last_video_mb": after_video[-1] if after_video else float("nan"),
        "rss_end_mb": _rss_mb(),
        "rss_sampled_max_mb": max((r for _, r in samples), default=float("nan")),
        "wall_s": wall,
        "frames_sampled": result.summary["frames_sampled"],
        "crops": result.summary["crops"],
        "items_failed": result.summary["items_failed"],
    }
    return out


# ---------------------------------------------------------------------------------------------
# the parent: clips, datasets, one child per configuration


def make_clips(workdir: Path, res: str, count: int, seconds: float, fps: int) -> list[Path]:
    """Clips generated in a subprocess (keeps this parent process small) and cached."""
    height, width, face_px = RESOLUTIONS[res]
    num_frames = int(round(seconds * fps))
    paths = [workdir / "clips" / f"{res}_{num_frames}f_{fps}fps_face{face_px}_{i}.mp4" for i in range(count)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        code = (
            "import sys, json\nfrom pathlib import Path\nfrom fakefinder.synthetic import write_video\na = "
            "json.loads(sys.argv[1])\nfor path in a['paths']:\n    p = Path(path); i = "
            "int(p.stem.rsplit('_', 1)[1])\n    tmp = p.with_name(p.stem + '.partial.mp4')\n    "
            "write_video(tmp, num_frames=a['n'], size=(a['h'], a['w']), identity=i, fps=a['fps'], "
            "face_px=a['face'], seed=200 + i)\n    tmp.replace(p)\n"
        )
        started = time.perf_counter()
        arg = json.dumps(
            {"paths": missing, "n": num_frames, "h": height, "w": width, "fps": fps, "face": face_px}
        )
        subprocess.run([sys.executable, "-c", code, arg], check=True)
        print(
            f"  generated {len(missing)} clip(s) of {seconds:g} s at {res} in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
    return paths


def run_child(spec: dict, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_configs(text: str) -> list[tuple[int, float]]:
    out = []
    for part in text.split(","):
        videos, seconds = part.lower().split("x")
        out.append((int(videos), float(seconds)))
    return out


def _parser() -> argparse.ArgumentParser:
    from fakefinder.config import FacesConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--configs", default="4x5,16x5,4x40", help="comma list of VIDEOSxSECONDS (default 4x5,16x5,4x40)"
    )
    parser.add_argument("--resolution", default="480p", choices=list(RESOLUTIONS))
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--frames", type=int, default=32, help="frames_per_video (default 32)")
    parser.add_argument(
        "--max-side",
        type=int,
        default=FacesConfig().detect_max_side,
        help=f"faces.detect_max_side (default {FacesConfig().detect_max_side}, the config's)",
    )
    parser.add_argument("--min-face-px", type=int, default=20)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="prepare.num_workers (default 0: inline, so the child's own peak is the run's)",
    )
    parser.add_argument("--workdir", type=Path, default=RESULTS / "prepare_memory_work")
    parser.add_argument("--json", type=Path, default=RESULTS / "prepare_memory.json")
    parser.add_argument(
        "--child-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment for the measured processes, e.g. MALLOC_MMAP_THRESHOLD_=1048576 "
        "or MALLOC_ARENA_MAX=2 (glibc allocator knobs); repeatable",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


def _measure(
    args: argparse.Namespace,
    common: dict,
    child_env: dict[str, str],
    clips: list[Path],
    videos: int,
    seconds: float,
) -> dict:
    """One configuration: its dataset folder of linked clips, prepared in a fresh child process."""
    name = f"{videos}x{seconds:g}s"
    root = args.workdir / "datasets" / name
    shutil.rmtree(root, ignore_errors=True)
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir(parents=True)
    for path in clips[:videos]:
        (root / "real" / path.name).symlink_to(path.resolve())
    output = args.workdir / "prepared" / name
    shutil.rmtree(output, ignore_errors=True)
    result = run_child({**common, "root": str(root), "output": str(output)}, child_env)
    result.update(
        {
            "config": name,
            "videos": videos,
            "seconds": seconds,
            "frames_per_video_in_file": int(round(seconds * args.fps)),
        }
    )
    return result


def _print_report(args: argparse.Namespace, baseline: dict, rows: list[dict]) -> float:
    """The table and its summaries; returns peak RSS max/min over the configurations."""
    peaks = [r["peak_rss_mb"] for r in rows]
    print()
    header = (
        f"{'config':>10}{'decoded/video':>14}{'frames':>8}{'crops':>7}{'failed':>7}{'wall s':>8}"
        f"{'peak RSS MB':>13}{'VmHWM MB':>10}{'RSS 1st video':>15}{'RSS last video':>16}"
    )
    print(header)
    print("-" * len(header))
    print(
        f"{'baseline':>10}{'-':>14}{0:>8}{0:>7}{0:>7}{'-':>8}{baseline['peak_rss_mb']:>13.0f}"
        f"{baseline['vm_hwm_mb']:>10.0f}{'-':>15}{'-':>16}"
    )
    for r in rows:
        print(
            f"{r['config']:>10}{r['frames_per_video_in_file']:>14}{r['frames_sampled']:>8}{r['crops']:>7}"
            f"{r['items_failed']:>7}{r['wall_s']:>8.0f}{r['peak_rss_mb']:>13.0f}{r['vm_hwm_mb']:>10.0f}"
            f"{r['rss_after_first_video_mb']:>15.0f}{r['rss_after_last_video_mb']:>16.0f}"
        )
    ratio = max(peaks) / min(peaks)
    print(
        f"peak RSS max/min over the configurations: {ratio:.3f} ({max(peaks):.0f} / {min(peaks):.0f} MB); "
        f"above the baseline: "
        + ", ".join(f"{r['config']} +{r['peak_rss_mb'] - baseline['peak_rss_mb']:.0f} MB" for r in rows)
    )
    if args.workers:
        print(
            "note: num_workers > 0: the table is the main process; the workers' peak is "
            + ", ".join(f"{r['config']} {r['children_peak_rss_mb']:.0f} MB" for r in rows)
        )
    growth = {r["config"]: r["rss_after_last_video_mb"] - r["rss_after_first_video_mb"] for r in rows}
    print(
        "RSS growth from the first to the last finished video: "
        + ", ".join(f"{name} +{mb:.0f} MB" for name, mb in growth.items())
    )
    return ratio


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    configs = parse_configs(args.configs)
    child_env = dict(item.split("=", 1) for item in args.child_env)
    height, width, _ = RESOLUTIONS[args.resolution]
    print(
        f"{len(configs)} configuration(s) at {args.resolution}, {args.frames} frames per video, "
        f"num_workers={args.workers}; each in a fresh process"
        + (f" with {' '.join(args.child_env)}" if child_env else ""),
        flush=True,
    )
    clips_by_length: dict[float, list[Path]] = {}
    for videos, seconds in configs:
        have = len(clips_by_length.get(seconds, []))
        if videos > have:
            clips_by_length[seconds] = make_clips(args.workdir, args.resolution, videos, seconds, args.fps)

    common = {
        "frames": args.frames,
        "max_side": args.max_side,
        "min_face_px": args.min_face_px,
        "workers": args.workers,
        "size": [height, width],
    }
    rows = []
    baseline = run_child({**common, "baseline": True}, child_env)
    print(
        f"  baseline (imports + the detector chain + 1 detection, no video): peak "
        f"{baseline['peak_rss_mb']:.0f} MB",
        flush=True,
    )
    for videos, seconds in configs:
        result = _measure(args, common, child_env, clips_by_length[seconds], videos, seconds)
        rows.append(result)
        print(
            f"  {result['config']}: peak {result['peak_rss_mb']:.0f} MB in {result['wall_s']:.0f} s",
            flush=True,
        )

    ratio = _print_report(args, baseline, rows)
    report = {
        "settings": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "child"
        },
        "baseline": baseline,
        "runs": rows,
        "peak_max_over_min": ratio,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
