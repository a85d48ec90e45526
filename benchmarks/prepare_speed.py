"""Benchmark: frame sampling + face detection speed of `fakefinder prepare` against a naive loop.

Generates clips as hard as real footage (`synthetic.write_footage`: a panning cluttered
background, sensor noise, two people, crf 23 with B-frames and 250-frame GOPs, a 1080x1920
portrait stored sideways with rotation metadata; cached under the work folder), or takes real
videos (`--videos`), then for `--frames` sampled frames per clip compares

  naive       decode every frame with PyAV on one thread, convert every frame to RGB (what an
              OpenCV `cap.read()` loop does), keep the evenly sampled ones, run MTCNN at full
              resolution one frame at a time;
  fakefinder  `read_frames()` (threaded decode, RGB only for sampled frames) + the detector
              chain of the face settings (`--detector`, `--fallback`, `--max-side`; default the
              config's: RetinaFace at a reduced size, MTCNN on frames it finds nothing in), in batches;
  prepare     the whole `prepare()` pipeline over the same clips (folder layout, the same face
              settings, crops written as JPEG), with each `--workers` setting.

Reports sampled frames/s, the speed-up, the decode/detect time split, and the recall of the
fakefinder faces against the naive loop's faces (a naive face is found when fakefinder has a box
with IoU >= 0.5 on the same frame); on generated clips, whose true face boxes are known, also the
recall of the naive faces that are faces (MTCNN at full resolution also boxes texture and parts of
faces: false positives no detector should be asked to repeat). Results also go to
<results>/prepare_speed.json.

    # 2 clips x (1080p, portrait, 720p, 480p), 10 s @ 30 fps
    python benchmarks/prepare_speed.py
    python benchmarks/prepare_speed.py --clips 1 --seconds 4 --workers 1   # quick
    python benchmarks/prepare_speed.py --videos /data/ffpp_samples /data/dfdc_samples --max-videos 8
                                      # real footage: any folders of videos, grouped by frame height
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import av
import torch

from _common import Contention, run_quietly
from fakefinder.config import FacesConfig, config_from_dict
from fakefinder.faces.detectors import DetectorChain, create_detector, iou
from fakefinder.faces.prepare import prepare
from fakefinder.media.video import _to_rgb, probe, read_frames, sample_indices
from fakefinder.synthetic import write_footage

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# name -> (height, width, portrait): the frame as decoded; a portrait clip is stored sideways
RESOLUTIONS = {
    "1080p": (1080, 1920, False),
    "portrait": (1920, 1080, True),
    "720p": (720, 1280, False),
    "480p": (480, 854, False),
}


# ---------------------------------------------------------------------------------------------
# clips


def make_clips(
    workdir: Path, resolutions: list[str], clips: int, seconds: float, fps: int, gop: int | None
) -> dict[str, list[Path]]:
    """The benchmark clips, generated once and reused (keyed by every generation parameter)."""
    num_frames = int(round(seconds * fps))
    out: dict[str, list[Path]] = {}
    for res in resolutions:
        height, width, portrait = RESOLUTIONS[res]
        paths = []
        for i in range(clips):
            name = f"footage_{res}_{num_frames}f_{fps}fps_gop{gop}_{i}.mp4"
            path = workdir / "clips" / name
            if not path.exists() or not truth_path(path).exists():
                started = time.perf_counter()
                partial = path.with_name(path.stem + ".partial.mp4")
                truth: list = []
                write_footage(
                    partial,
                    num_frames=num_frames,
                    size=(height, width),
                    identity=i,
                    fps=fps,
                    gop=gop,
                    portrait=portrait,
                    seed=100 + i,
                    truth=truth,
                )
                truth_path(path).write_text(json.dumps(truth))
                partial.replace(path)
                print(f"  generated {path.name} in {time.perf_counter() - started:.1f} s", flush=True)
            paths.append(path)
        out[res] = paths
    return out


def truth_path(clip: Path) -> Path:
    return clip.with_name(clip.stem + ".truth.json")


def load_truth(clip: Path) -> list | None:
    """A generated clip's true face boxes per frame (None for real footage)."""
    path = truth_path(clip)
    return json.loads(path.read_text()) if path.exists() else None


def real_clips(folders: list[Path], workdir: Path, limit: int | None) -> dict[str, list[Path]]:
    """Videos found under `folders` (sorted, at most `limit`), grouped by their frame height
    ("1080p", "720p", ...; a portrait clip by its shorter side), each reached through a uniquely
    named link so clips with the same file name in different folders stay apart."""
    from fakefinder.media.images import VIDEO_EXTENSIONS

    found = sorted(
        p
        for folder in folders
        for p in Path(folder).rglob("*")
        if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
    )
    if not found:
        raise SystemExit(
            f"no videos ({', '.join(sorted(VIDEO_EXTENSIONS))}) under {', '.join(map(str, folders))}"
        )
    links = workdir / "real_clips"
    shutil.rmtree(links, ignore_errors=True)
    links.mkdir(parents=True)
    out: dict[str, list[Path]] = {}
    for i, path in enumerate(found[:limit]):
        info = probe(path)
        label = f"{min(info.height, info.width)}p"
        link = links / f"{i:04d}_{path.stem}{path.suffix.lower()}"
        link.symlink_to(path.resolve())
        out.setdefault(label, []).append(link)
        print(
            f"  {path} ({info.width}x{info.height}, {info.num_frames} frames @ {info.fps:.0f} fps) -> "
            f"{label}",
            flush=True,
        )
    return dict(sorted(out.items(), key=lambda item: -int(item[0][:-1])))


# ---------------------------------------------------------------------------------------------
# the two loops


def naive_loop(path: Path, detector, frames: int) -> dict:
    """Decode every frame single-threaded, RGB-convert every frame, detect sampled frames at full
    resolution one at a time."""
    wanted = set(sample_indices(probe(path).num_frames, frames))
    faces: dict[int, list] = {}
    decode = detect = 0.0
    decoded = 0
    started = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"  # one decoding thread, like a plain decode loop
        stream.thread_count = 1
        iterator = container.decode(stream)
        index = 0
        while True:
            t0 = time.perf_counter()
            frame = next(iterator, None)
            if frame is None:
                decode += time.perf_counter() - t0
                break
            image = _to_rgb(frame)  # cap.read() hands every frame back, turned upright by its rotation
            decoded += 1
            decode += time.perf_counter() - t0
            if index in wanted:
                t0 = time.perf_counter()
                found = detector.detect([image], max_side=None)[0]
                detect += time.perf_counter() - t0
                faces[index] = [f.box for f in found]
            index += 1
    total = time.perf_counter() - started
    return {
        "faces": faces,
        "decode_s": decode,
        "detect_s": detect,
        "total_s": total,
        "frames_decoded": decoded,
        "frames_sampled": len(faces),
    }


def fakefinder_loop(path: Path, chain: DetectorChain, frames: int, batch: int) -> dict:
    """`read_frames` + the detector chain in batches (its `detect_max_side` downscaling), like `prepare`."""
    faces: dict[int, list] = {}
    decode = detect = 0.0
    started = time.perf_counter()
    iterator = read_frames(path, count=frames)

    def run(chunk):
        nonlocal detect
        t0 = time.perf_counter()
        found = chain.detect([image for _, image in chunk])
        detect += time.perf_counter() - t0
        for (index, _), per_frame in zip(chunk, found):
            faces[index] = [f.box for f in per_frame]

    chunk = []
    while True:
        t0 = time.perf_counter()
        item = next(iterator, None)
        decode += time.perf_counter() - t0
        if item is None:
            break
        chunk.append(item)
        if len(chunk) == batch:
            run(chunk)
            chunk = []
    if chunk:
        run(chunk)
    total = time.perf_counter() - started
    return {
        "faces": faces,
        "decode_s": decode,
        "detect_s": detect,
        "total_s": total,
        "frames_sampled": len(faces),
    }


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def match(
    reference: dict[int, list],
    candidate: dict[int, list],
    threshold: float = 0.5,
    searched_px: float = 0.0,
    truth: list | None = None,
) -> dict:
    """Recall of `candidate` boxes against `reference` boxes, frame by frame: a reference box is
    found when the candidate has a box with IoU >= `threshold` on the same frame index. Also the
    recall of the largest reference box per frame (the one `prepare` keeps by default), and of the
    reference boxes whose shorter side is at least `searched_px` (the smallest face the settings
    search for). With `truth` (a generated clip's true face boxes per frame), also the recall of the
    reference boxes that are faces (IoU >= `threshold` with a true box), not detector false positives."""
    ref_faces = found = extra = largest = largest_found = searched = searched_found = real = real_found = 0
    for index, boxes in reference.items():
        others = candidate.get(index, [])
        faces_here = truth[index] if truth is not None and index < len(truth) else []
        used = set()
        for box in boxes:
            ref_faces += 1
            big_enough = min(box[2] - box[0], box[3] - box[1]) >= searched_px
            searched += big_enough
            is_face = any(iou(box, t) >= threshold for t in faces_here)
            real += is_face
            best = max(range(len(others)), key=lambda k: iou(box, others[k]), default=None)
            if best is not None and iou(box, others[best]) >= threshold:
                found += 1
                searched_found += big_enough
                real_found += is_face
                used.add(best)
        extra += len(others) - len(used)
        if boxes:
            largest += 1
            big = max(boxes, key=_area)
            largest_found += any(iou(big, other) >= threshold for other in others)
    return {
        "reference_faces": ref_faces,
        "found": found,
        "extra": extra,
        "largest_faces": largest,
        "largest_found": largest_found,
        "searched_faces": searched,
        "searched_found": searched_found,
        "real_faces": real if truth is not None else None,
        "real_found": real_found,
    }


def searched_px(path: Path, faces: FacesConfig) -> float:
    """The smallest face side (source pixels) these settings search for in this clip."""
    from fakefinder.faces.detectors import DETECT_MIN_PX

    info = probe(path)
    side = max(info.width, info.height)
    if faces.detect_max_side is None or side <= faces.detect_max_side:
        return float(faces.min_face_px)
    return max(float(faces.min_face_px), DETECT_MIN_PX * side / faces.detect_max_side)


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


# ---------------------------------------------------------------------------------------------
# the whole pipeline


def run_prepare(dataset_root: Path, output: Path, frames: int, workers: int, faces: FacesConfig) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    config = config_from_dict(
        {
            "data": {
                "datasets": [{"name": "bench", "layout": "folder", "root": str(dataset_root)}],
                "frames_per_video": frames,
                "split": {"train": 1.0, "val": 0.0, "test": 0.0},
            },
            "faces": faces.model_dump(mode="json"),
            "prepare": {"output_dir": str(output), "num_workers": workers},
        },
        source="benchmark",
    )
    with Contention() as contention:  # the same span as run_quietly's, but kept in the result
        started = time.perf_counter()
        result = prepare(config, progress=False, events=lambda event: None)
        wall = time.perf_counter() - started
    records = {}
    for record_file in (output / ".records").rglob("*.json"):
        record = json.loads(record_file.read_text())
        records[record["video_id"].split("/")[-1]] = record
    return {
        "wall_s": wall,
        "summary": result.summary,
        "records": records,
        "other_cpu_s": contention.other_cpu_s,
    }


# ---------------------------------------------------------------------------------------------


def fps(frames: int, seconds: float) -> float:
    return frames / seconds if seconds > 0 else float("nan")


def _summarise(clip_rows: list[dict]) -> dict:
    """Sums over clips, then rates and ratios."""
    out: dict = {"clips": len(clip_rows)}
    for side in ("naive", "fakefinder"):
        for key in ("frames_sampled", "frames_with_face", "decode_s", "detect_s", "total_s", "other_cpu_s"):
            out[f"{side}_{key}"] = sum(r[side][key] for r in clip_rows)
        out[f"{side}_fps"] = fps(out[f"{side}_frames_sampled"], out[f"{side}_total_s"])
    for key in (
        "reference_faces",
        "found",
        "extra",
        "largest_faces",
        "largest_found",
        "searched_faces",
        "searched_found",
        "real_found",
    ):
        out[key] = sum(r["match"][key] for r in clip_rows)
    known = [r["match"]["real_faces"] for r in clip_rows]
    out["real_faces"] = sum(known) if known and None not in known else None
    out["speedup"] = _ratio(out["fakefinder_fps"], out["naive_fps"])
    out["detect_speedup"] = _ratio(out["naive_detect_s"], out["fakefinder_detect_s"])
    out["decode_speedup"] = _ratio(out["naive_decode_s"], out["fakefinder_decode_s"])
    out["recall"] = _ratio(out["found"], out["reference_faces"])
    out["recall_largest"] = _ratio(out["largest_found"], out["largest_faces"])
    out["recall_searched"] = _ratio(out["searched_found"], out["searched_faces"])
    out["recall_real"] = (
        _ratio(out["real_found"], out["real_faces"]) if out["real_faces"] is not None else float("nan")
    )
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=2, help="clips per resolution (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10 s)")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--frames", type=int, default=32, help="sampled frames per clip (default 32)")
    parser.add_argument(
        "--resolutions",
        default="1080p,portrait,720p,480p",
        help=f"comma list of {','.join(RESOLUTIONS)} (default 1080p,480p)",
    )
    parser.add_argument(
        "--gop", type=int, default=250, help="encoder keyframe interval (default 250, x264's)"
    )
    defaults = FacesConfig()
    parser.add_argument(
        "--detector", default=defaults.detector, help=f"fakefinder side (default {defaults.detector})"
    )
    parser.add_argument(
        "--fallback",
        default=",".join(defaults.fallback),
        help=f"fakefinder side, comma list (default {','.join(defaults.fallback)})",
    )
    parser.add_argument(
        "--max-side",
        type=int,
        default=defaults.detect_max_side,
        help=f"fakefinder detect_max_side (default {defaults.detect_max_side}, as prepare)",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=defaults.batch_size,
        help=f"fakefinder detection batch (default {defaults.batch_size})",
    )
    parser.add_argument(
        "--min-face-px",
        type=int,
        default=20,
        help="MTCNN min face side in source pixels, both sides (default 20, the config default)",
    )
    parser.add_argument(
        "--ff-min-face-px",
        type=int,
        default=None,
        help="what-if: another min_face_px for the fakefinder side and prepare() only",
    )
    parser.add_argument(
        "--workers",
        default="1,2",
        help="prepare() num_workers settings to time, comma list; '' skips prepare",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=120.0,
        help="before each timed loop wait up to this many seconds for the machine to "
        "be idle (shared machines; 0: don't wait)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="re-time a loop (keeping the least disturbed run) when other processes "
        "used > 5%% of the CPUs meanwhile (default 2)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=RESULTS / "prepare_speed_work",
        help="clip cache and prepare outputs (default benchmarks/results/prepare_speed_work)",
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "prepare_speed.json")
    parser.add_argument(
        "--videos",
        type=Path,
        nargs="+",
        default=None,
        help="real mode: benchmark on the videos under these folders instead of generated clips",
    )
    parser.add_argument("--max-videos", type=int, default=None, help="real mode: at most this many videos")
    return parser


def _warm_up(resolutions: list[str], clips: dict[str, list[Path]], naive_detector, chain, args) -> None:
    """Builds the MTCNN models (one per min_face_size) and the kernels for each size."""
    for res in resolutions:
        first = next(read_frames(clips[res][0], count=1))[1]
        naive_detector.detect([first], max_side=None)
        chain.detect([first] * min(2, args.batch))
        for name in chain.names:  # the fallbacks too, so their first frame is not timed cold
            if chain._get(name) is not None:
                chain._get(name).detect([first], max_side=args.max_side)


def _time_clip(
    path: Path, res: str, naive_detector, chain: DetectorChain, faces: FacesConfig, args
) -> tuple[dict, dict, float]:
    """Both loops over one clip: its table row, the naive loop's faces and the seconds waited for idle."""
    naive, naive["other_cpu_s"], w1, n1 = run_quietly(
        lambda: naive_loop(path, naive_detector, args.frames), args.wait_idle, args.retries
    )
    ours, ours["other_cpu_s"], w2, n2 = run_quietly(
        lambda: fakefinder_loop(path, chain, args.frames, args.batch), args.wait_idle, args.retries
    )
    naive["attempts"], ours["attempts"] = n1, n2
    if sorted(naive["faces"]) != sorted(ours["faces"]):
        print(
            f"  WARNING {path.name}: sampled indices differ: naive {sorted(naive['faces'])} fakefinder "
            f"{sorted(ours['faces'])}"
        )
    m = match(naive["faces"], ours["faces"], searched_px=searched_px(path, faces), truth=load_truth(path))
    for side in (naive, ours):
        side["frames_with_face"] = sum(1 for boxes in side["faces"].values() if boxes)
    row = {
        "clip": path.name,
        "resolution": res,
        "naive": {k: v for k, v in naive.items() if k != "faces"},
        "fakefinder": {k: v for k, v in ours.items() if k != "faces"},
        "match": m,
    }
    print(
        f"  {path.name}: naive {naive['total_s']:.2f} s (decode {naive['decode_s']:.2f}, detect "
        f"{naive['detect_s']:.2f}) | fakefinder {ours['total_s']:.2f} s (decode {ours['decode_s']:.2f}, "
        f"detect {ours['detect_s']:.2f}) | found {m['found']}/{m['reference_faces']} naive faces, "
        f"{m['extra']} extra | other processes used {naive['other_cpu_s'] + ours['other_cpu_s']:.1f} CPU s "
        f"(attempts {n1}+{n2})",
        flush=True,
    )
    return row, naive["faces"], w1 + w2


def _link_dataset(args, resolutions: list[str], clips: dict[str, list[Path]]) -> Path:
    """A folder-layout dataset of links to the clips, for prepare()."""
    dataset_root = args.workdir / "dataset"
    shutil.rmtree(dataset_root, ignore_errors=True)
    (dataset_root / "fake").mkdir(parents=True)  # the folder layout wants both sub-folders
    (dataset_root / "real").mkdir(parents=True)
    for res in resolutions:
        for path in clips[res]:
            (dataset_root / "real" / path.name).symlink_to(path.resolve())
    return dataset_root


def _prepare_by_resolution(
    run: dict, resolutions: list[str], clips: dict[str, list[Path]], naive_faces: dict
) -> dict:
    """prepare()'s per-item records summed per resolution, its boxes matched to the naive loop's."""
    by_res = {}
    for res in resolutions:
        names = {p.stem for p in clips[res]}
        recs = {n: r for n, r in run["records"].items() if n in names}
        chosen = {n: {} for n in recs}
        for n, r in recs.items():
            for row in r["rows"]:
                chosen[n].setdefault(row["frame_index"], []).append(row["box"])
        m = [match(naive_faces[n], chosen[n]) for n in recs]
        b = {
            "item_seconds": sum(r["seconds"] for r in recs.values()),
            "frames_sampled": sum(r["frames_sampled"] for r in recs.values()),
            "frames_with_face": sum(r["frames_with_face"] for r in recs.values()),
            "failed": sum(r["status"] != "ok" for r in recs.values()),
            "largest_faces": sum(x["largest_faces"] for x in m),
            "largest_found": sum(x["largest_found"] for x in m),
        }
        b["item_fps"] = fps(b["frames_sampled"], b["item_seconds"])
        b["recall_largest"] = _ratio(b["largest_found"], b["largest_faces"])
        by_res[res] = b
    return by_res


def _time_prepare(
    args,
    dataset_root: Path,
    workers: int,
    faces: FacesConfig,
    resolutions: list[str],
    clips: dict[str, list[Path]],
    naive_faces: dict,
    overall: dict,
) -> tuple[dict, float]:
    """One timed prepare() run with `workers` workers: its figures and the seconds waited for idle."""
    print(f"prepare() with num_workers={workers} ...", flush=True)
    run, _, w, attempts = run_quietly(
        lambda: run_prepare(dataset_root, args.workdir / f"prepared_w{workers}", args.frames, workers, faces),
        args.wait_idle,
        args.retries,
    )
    summary = run["summary"]
    by_res = _prepare_by_resolution(run, resolutions, clips, naive_faces)
    p = {
        "wall_s": run["wall_s"],
        "other_cpu_s": run["other_cpu_s"],
        "attempts": attempts,
        "frames_sampled": summary["frames_sampled"],
        "frames_with_face": summary["frames_with_face"],
        "crops": summary["crops"],
        "items_failed": summary["items_failed"],
        "wall_fps": fps(summary["frames_sampled"], run["wall_s"]),
        "by_resolution": by_res,
    }
    p["speedup_vs_naive"] = _ratio(p["wall_fps"], overall["naive_fps"])
    p["recall_largest"] = _ratio(
        sum(b["largest_found"] for b in by_res.values()),
        sum(b["largest_faces"] for b in by_res.values()),
    )
    return p, w


def _print_report(
    args,
    clips: dict[str, list[Path]],
    chain: DetectorChain,
    ff_min_face: int,
    rows: dict,
    pipeline: dict,
    waited: float,
) -> None:
    """The per-resolution table, what its columns mean, and the prepare() runs."""
    overall = rows["overall"]
    naive_false = (
        "no true boxes for real footage"
        if overall["real_faces"] is None
        else f"{overall['reference_faces'] - overall['real_faces']} of {overall['reference_faces']} naive "
        f"boxes"
    )
    print()
    source = (
        f"{sum(len(v) for v in clips.values())} real video(s) from {', '.join(map(str, args.videos))}"
        if args.videos
        else f"{args.clips} generated clip(s) per resolution, {args.seconds:g} s @ {args.fps} fps"
    )
    print(
        f"{source}, {args.frames} sampled frames per clip; naive: MTCNN at full resolution, "
        f"min_face_px={args.min_face_px}; fakefinder: {' then '.join(chain.names)}, "
        f"detect_max_side={args.max_side}, "
        f"batch={args.batch}" + (f", min_face_px={ff_min_face}" if ff_min_face != args.min_face_px else "")
    )
    header = (
        f"{'':9}{'naive f/s':>10}{'ff f/s':>8}{'speed-up':>9}{'recall':>8}{'rec.big':>8}"
        f"{'rec.srch':>9}{'rec.real':>9}"
        f"{'faces n/ff':>11} | {'naive decode+detect s':>21} | {'ff decode+detect s':>18}"
        f" | {'detect x':>8}{'decode x':>9} | {'other CPU s':>11}"
    )
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        faces = f"{r['naive_frames_with_face']}/{r['fakefinder_frames_with_face']}"
        other = r["naive_other_cpu_s"] + r["fakefinder_other_cpu_s"]
        print(
            f"{name:9}{r['naive_fps']:>10.2f}{r['fakefinder_fps']:>8.2f}{r['speedup']:>8.2f}x"
            f"{r['recall']:>8.3f}{r['recall_largest']:>8.3f}{r['recall_searched']:>9.3f}"
            f"{r['recall_real']:>9.3f}{faces:>11} | "
            f"{r['naive_decode_s']:>8.2f} + {r['naive_detect_s']:<10.2f} | "
            f"{r['fakefinder_decode_s']:>7.2f} + {r['fakefinder_detect_s']:<8.2f} | "
            f"{r['detect_speedup']:>7.2f}x{r['decode_speedup']:>8.2f}x | {other:>11.1f}"
        )
    print(
        f"recall: naive faces with a fakefinder box of IoU >= 0.5 on the same frame (rec.big: the largest "
        f"naive face per frame; rec.srch: naive faces at least as large as the smallest face the settings "
        f"search for, 20 px at detection scale; rec.real: naive faces that are faces, i.e. match a generated "
        f"clip's true face box, not naive false positives: {naive_false}); {overall['extra']} fakefinder "
        f"box(es) match no naive face; 'faces n/ff': sampled frames with >= 1 face, of "
        f"{overall['naive_frames_sampled']}; 'other CPU s': CPU time used by other processes during the "
        f"timed loops (should be ~0)"
    )
    if pipeline:
        print()
        print(
            "prepare() end to end over the same clips (process start, detector load, decode, detect, JPEG "
            "crops, manifest):"
        )
        for workers, p in pipeline.items():
            parts = ", ".join(
                f"{res} {b['item_fps']:.2f} f/s per worker" for res, b in p["by_resolution"].items()
            )
            print(
                f"  num_workers={workers}: {p['frames_sampled']} frames in {p['wall_s']:.1f} s = "
                f"{p['wall_fps']:.2f} f/s = {p['speedup_vs_naive']:.2f}x naive; faces in "
                f"{p['frames_with_face']}/{p['frames_sampled']} frames, recall of the largest naive face "
                f"{p['recall_largest']:.3f}, {p['items_failed']} failed; {parts}; other CPU "
                f"{p['other_cpu_s']:.1f} s"
            )
    if waited > 1:
        print(f"(waited {waited:.0f} s in total for other processes to go idle)")


def _settings(args) -> dict:
    return {
        **{
            k: (str(v) if isinstance(v, Path) else [str(p) for p in v] if isinstance(v, list) else v)
            for k, v in vars(args).items()
        },
        "mode": "real" if args.videos else "generated",
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "av": av.__version__,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    torch.set_flush_denormal(True)
    resolutions = [r.strip() for r in args.resolutions.split(",") if r.strip()]
    unknown = [r for r in resolutions if r not in RESOLUTIONS]
    if unknown and not args.videos:
        parser.error(f"unknown resolution(s) {unknown}; known: {list(RESOLUTIONS)}")
    workers_list = [int(w) for w in args.workers.split(",") if w.strip()]
    ff_min_face = args.ff_min_face_px or args.min_face_px

    print(
        f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"PyAV {av.__version__}, {os.cpu_count()} CPUs",
        flush=True,
    )
    print("clips:", flush=True)
    if args.videos:
        clips = real_clips(args.videos, args.workdir, args.max_videos)
        resolutions = list(clips)
    else:
        clips = make_clips(args.workdir, resolutions, args.clips, args.seconds, args.fps, args.gop)

    naive_detector = create_detector("mtcnn", min_face_px=args.min_face_px)
    faces = FacesConfig(
        detector=args.detector,
        fallback=[n for n in args.fallback.split(",") if n.strip()],
        detect_max_side=args.max_side,
        batch_size=args.batch,
        min_face_px=ff_min_face,
    )
    chain = DetectorChain(faces)
    for warning in chain.verify():
        print("  " + warning)
    _warm_up(resolutions, clips, naive_detector, chain, args)

    clip_rows: list[dict] = []
    naive_faces: dict[str, dict[int, list]] = {}
    waited = 0.0
    for res in resolutions:
        for path in clips[res]:
            row, naive_faces[path.stem], w = _time_clip(path, res, naive_detector, chain, faces, args)
            waited += w
            clip_rows.append(row)

    rows = {res: _summarise([r for r in clip_rows if r["resolution"] == res]) for res in resolutions}
    rows["overall"] = _summarise(clip_rows)
    overall = rows["overall"]

    # the whole pipeline, over the same clips
    pipeline = {}
    if workers_list:
        dataset_root = _link_dataset(args, resolutions, clips)
        for workers in workers_list:
            p, w = _time_prepare(args, dataset_root, workers, faces, resolutions, clips, naive_faces, overall)
            waited += w
            pipeline[str(workers)] = p
            print(f"  {p['wall_s']:.1f} s, other processes used {p['other_cpu_s']:.1f} CPU s", flush=True)

    # ---- report
    _print_report(args, clips, chain, ff_min_face, rows, pipeline, waited)

    report = {
        "settings": _settings(args),
        "by_resolution": rows,
        "clips": clip_rows,
        "prepare": pipeline,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
