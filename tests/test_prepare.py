import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

import fakefinder
from conftest import SMALL_VIDEO, cli, make_config
from fakefinder import synthetic
from fakefinder.faces.layouts import LayoutError
from fakefinder.faces.prepare import MANIFEST_COLUMNS, RECORDS_DIR


def ds(name, layout, root, **kw):
    return {"name": name, "layout": layout, "root": str(root), **kw}


def check_manifest(result):
    manifest = pd.read_csv(result.manifest_path)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    for row in manifest.itertuples():
        crop = result.output_dir / row.path
        assert crop.is_file()
        assert row.path.startswith(f"{row.dataset}/{row.split}/{row.label}/")
        assert row.x2 > row.x1 and row.y2 > row.y1
    # a video's frames are found by video_id, and a video never spans two splits or labels
    per_video = manifest.groupby("video_id")[["split", "label", "group"]].nunique()
    assert (per_video == 1).all().all()
    per_group = manifest.groupby("group")["split"].nunique()
    assert (per_group == 1).all()
    return manifest


def test_ffpp_end_to_end(trees, tmp_path):
    out = tmp_path / "out"
    config = make_config(
        out, [ds("ffpp", "ffpp", trees["ffpp"])], faces={"detector": "mtcnn", "fallback": ["retinaface"]}
    )
    result = fakefinder.prepare(config, progress=False)
    manifest = check_manifest(result)
    assert result.summary["items_ok"] == 12 and result.summary["items_failed"] == 0
    assert set(manifest.method) == {"original", "Deepfakes", "Face2Face"}
    assert manifest.groupby("video_id").size().eq(3).all()  # 3 frames per video, one face each
    assert manifest.video_id.nunique() == 12  # 000_001 under two methods stays two videos
    with Image.open(out / manifest.path[0]) as crop:
        assert crop.size == (64, 64)
    assert (out / "config.yaml").is_file() and (out / "summary.json").is_file()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["frames_per_video"] == 3


def test_dfdc_celebdf_folder_in_one_config(trees, tmp_path):
    config = make_config(
        tmp_path / "out",
        [
            ds("dfdc", "dfdc", trees["dfdc"]),
            ds("cdf", "celebdf", trees["celebdf"]),
            ds("f", "folder", trees["folder"]),
        ],
        data={"split": {"train": 0.5, "val": 0.25, "test": 0.25}},
    )
    result = fakefinder.prepare(config, progress=False)
    manifest = check_manifest(result)
    assert set(manifest.dataset) == {"dfdc", "cdf", "f"}
    cdf = manifest[manifest.dataset == "cdf"]
    assert set(cdf[cdf.split == "test"].video_id) == {
        "cdf:Celeb-real/id0_0000",
        "cdf:Celeb-synthesis/id0_id1_0000",
        "cdf:YouTube-real/00000",
    }
    dfdc = manifest[manifest.dataset == "dfdc"]
    assert dfdc.groupby("group").label.nunique().eq(2).all()  # each real sits with its fakes
    images = manifest[(manifest.dataset == "f") & manifest.path.str.contains("stills")]
    assert len(images) == 4 and set(images.frame_index) == {0}


def test_csv_of_crops_without_detection(trees, tmp_path):
    config = make_config(
        tmp_path / "out", [ds("crops", "csv", trees["csv"])], faces={"detect": False, "size": 48}
    )
    result = fakefinder.prepare(config, progress=False)
    manifest = check_manifest(result)
    assert len(manifest) == 20
    assert set(manifest.detector) == {"none"}
    listed = pd.read_csv(trees["csv"] / "metadata.csv")
    expected = dict(zip(listed.file.str.replace(".jpg", "", regex=False), listed.split))
    assert all(expected[v.split(":", 1)[1]] == s for v, s in zip(manifest.video_id, manifest.split))
    with Image.open(result.output_dir / manifest.path[0]) as crop:
        assert crop.size == (48, 48)
    # crops already at the wanted size and format are copied byte for byte (no second JPEG pass)
    same = make_config(
        tmp_path / "same", [ds("crops", "csv", trees["csv"])], faces={"detect": False, "size": 96}
    )
    copied = check_manifest(fakefinder.prepare(same, progress=False))
    for row in copied.head(3).itertuples():
        assert (tmp_path / "same" / row.path).read_bytes() == Path(row.source_path).read_bytes()


def test_one_giant_identity_group_is_warned_about(tmp_path):
    from fakefinder.faces.layouts import MediaItem
    from fakefinder.faces.prepare import _split_warnings

    items = [MediaItem("d", Path("x"), "real", f"d:{k}", "original", ("g",)) for k in range(8)]
    items += [MediaItem("d", Path("x"), "real", f"d:o{k}", "original", (f"o{k}",)) for k in range(4)]
    for item in items:
        item.group = item.links[0]
    (warning,) = _split_warnings(items)
    assert "holds 8 of 12" in warning
    assert _split_warnings(items[6:]) == []


def bad_tree(root: Path) -> Path:
    """A DFDC folder holding one good real and one of each kind of bad input."""
    folder = root / "part0"
    good = synthetic.write_video(folder / "good.mp4", identity=0, **SMALL_VIDEO)
    synthetic.write_video(folder / "noface.mp4", face=False, **SMALL_VIDEO)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "corrupt.mp4").write_bytes(
        np.random.default_rng(1).integers(0, 255, 4000, dtype=np.uint8).tobytes()
    )
    data = good.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 3])
    shutil.copy(good, folder / "unlisted.mp4")
    metadata = {
        n: {"label": "REAL"} for n in ("good.mp4", "noface.mp4", "empty.mp4", "corrupt.mp4", "truncated.mp4")
    }
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return root


def test_bad_inputs_are_recorded_not_fatal(tmp_path):
    root = bad_tree(tmp_path / "dfdc")
    images = tmp_path / "imgs"
    synthetic.write_image(images / "real" / "ok.png", identity=1)
    (images / "fake").mkdir(parents=True)
    (images / "fake" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (images / "fake" / "zero.png").write_bytes(b"")
    config = make_config(
        tmp_path / "out", [ds("d", "dfdc", root, use_official_split=False), ds("i", "folder", images)]
    )
    result = fakefinder.prepare(config, progress=False)
    failures = pd.read_csv(result.failures_path)
    reasons = {Path(p).name: r for p, r in zip(failures.source_path, failures.reason)}
    assert "no face found" in reasons["noface.mp4"]
    assert "empty" in reasons["empty.mp4"]
    assert "no entry" in reasons["unlisted.mp4"] and "metadata.json" in reasons["unlisted.mp4"]
    assert reasons["corrupt.mp4"]
    assert "unreadable image" in reasons["broken.jpg"]
    assert "empty" in reasons["zero.png"]
    manifest = pd.read_csv(result.manifest_path)
    done = {Path(p).name for p in manifest.source_path}
    assert {"good.mp4", "ok.png"} <= done
    # a truncated file is either used for the frames it still has or listed as a failure
    assert ("truncated.mp4" in done) != ("truncated.mp4" in reasons)
    assert result.summary["items_failed"] == len(failures)
    assert result.summary["items_ok"] + result.summary["items_failed"] == result.summary["items_listed"]


def test_rerun_does_nothing_and_settings_change_redoes(trees, tmp_path):
    config = make_config(tmp_path / "out", [ds("dfdc", "dfdc", trees["dfdc"])])
    first = fakefinder.prepare(config, progress=False)
    assert first.processed == 9
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.jpg")}
    again = fakefinder.prepare(config, progress=False)
    assert (again.processed, again.skipped) == (0, 9)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.jpg")} == stamp
    assert pd.read_csv(again.manifest_path).equals(pd.read_csv(first.manifest_path))
    changed = config.model_copy(deep=True)
    changed.faces.size = 48
    assert fakefinder.prepare(changed, progress=False).processed == 9


def test_shards_merge_into_the_full_manifest(trees, tmp_path):
    datasets = [ds("ffpp", "ffpp", trees["ffpp"])]
    whole = fakefinder.prepare(make_config(tmp_path / "whole", datasets), progress=False)
    shared = tmp_path / "shared"
    shard_rows = 0
    for index in range(3):
        part = fakefinder.prepare(make_config(shared, datasets), shard=f"{index}/3", progress=False)
        assert part.manifest_path.name == f"manifest.shard-{index}-of-3.csv"
        shard_rows += len(pd.read_csv(part.manifest_path))
    merged = fakefinder.prepare(make_config(shared, datasets), merge_only=True, progress=False)
    assert merged.processed == 0 and merged.summary["items_pending"] == 0
    key = ["video_id", "frame_index"]
    a = pd.read_csv(whole.manifest_path).sort_values(key).reset_index(drop=True)
    b = pd.read_csv(merged.manifest_path).sort_values(key).reset_index(drop=True)
    assert shard_rows == len(a)
    pd.testing.assert_frame_equal(a.drop(columns=["score"]), b.drop(columns=["score"]))


def test_reuse_real_boxes_for_fakes(trees, tmp_path):
    config = make_config(
        tmp_path / "out", [ds("dfdc", "dfdc", trees["dfdc"])], faces={"reuse_real_boxes": True}
    )
    manifest = check_manifest(fakefinder.prepare(config, progress=False))
    fakes = manifest[manifest.label == "fake"]
    assert fakes.detector.str.startswith("reused:").all()
    reals = manifest[manifest.label == "real"].set_index(["video_id", "frame_index"])
    for row in fakes.itertuples():
        real = reals.loc[(row.source_video_id, row.frame_index)]
        assert (row.x1, row.y1, row.x2, row.y2) == (real.x1, real.y1, real.x2, real.y2)


def test_parquet_manifest_and_png_crops(trees, tmp_path):
    config = make_config(
        tmp_path / "out",
        [ds("f", "folder", trees["folder"])],
        prepare={"manifest_name": "manifest.parquet", "image_format": "png"},
    )
    result = fakefinder.prepare(config, progress=False)
    manifest = pd.read_parquet(result.manifest_path)
    assert len(manifest) > 0 and manifest.path.str.endswith(".png").all()


def test_parallel_workers_match_inline(trees, tmp_path):
    datasets = [ds("dfdc", "dfdc", trees["dfdc"])]
    inline = fakefinder.prepare(make_config(tmp_path / "a", datasets), progress=False)
    parallel = fakefinder.prepare(
        make_config(tmp_path / "b", datasets, prepare={"num_workers": 2}), progress=False
    )
    key = ["video_id", "frame_index"]
    a = pd.read_csv(inline.manifest_path).sort_values(key).reset_index(drop=True)
    b = pd.read_csv(parallel.manifest_path).sort_values(key).reset_index(drop=True)
    assert a[key + ["split", "path"]].equals(b[key + ["split", "path"]])


def test_wrong_layout_fails_fast(trees, tmp_path):
    config = make_config(tmp_path / "out", [ds("x", "ffpp", trees["dfdc"])])
    with pytest.raises(LayoutError, match="original_sequences"):
        fakefinder.prepare(config, progress=False)


# --- the command line, and resuming after SIGKILL ---------------------------------------------


def test_cli_prepare_with_overrides_and_clear_errors(trees, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"datasets": [ds("f", "folder", trees["folder"])]}}))
    out = tmp_path / "out"
    done = cli(
        "prepare",
        "-c",
        str(cfg),
        "data.frames_per_video=2",
        f"prepare.output_dir={out}",
        "faces.size=32",
        "faces.detector=retinaface",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    manifest = pd.read_csv(out / "manifest.csv")
    assert manifest[manifest.path.str.contains("clips")].groupby("video_id").size().eq(2).all()
    bad = cli("prepare", "-c", str(cfg), "data.frams_per_video=2")
    assert bad.returncode == 2
    assert "data.frams_per_video" in bad.stderr and "data.frames_per_video" in bad.stderr
    wrong = cli("prepare", "-c", str(cfg), "data.datasets.0.layout=celebdf")
    assert wrong.returncode == 2 and "Celeb-DF" in wrong.stderr and str(trees["folder"]) in wrong.stderr


def test_resume_after_sigkill(tmp_path):
    root = synthetic.make_dfdc_tree(
        tmp_path / "dfdc", originals=6, fakes_per_original=2, num_frames=24, size=(144, 192)
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"datasets": [ds("d", "dfdc", root)], "frames_per_video": 12},
                "faces": {"detector": "retinaface", "fallback": [], "size": 64, "batch_size": 2},
                "prepare": {"output_dir": str(tmp_path / "out"), "num_workers": 0},
            }
        )
    )
    records = tmp_path / "out" / RECORDS_DIR
    process = subprocess.Popen(
        [sys.executable, "-m", "fakefinder", "prepare", "-c", str(cfg), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(records.rglob("*.json"))) < 4:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = len(list(records.rglob("*.json")))
    done_stamps = {p: p.stat().st_mtime_ns for p in records.rglob("*.json")}
    assert 4 <= finished_before < 18, "the kill should land mid-run"
    assert not (tmp_path / "out" / "manifest.csv").exists()

    resumed = cli("prepare", "-c", str(cfg), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert {p: p.stat().st_mtime_ns for p in done_stamps} == done_stamps  # finished work not redone
    assert not list((tmp_path / "out").rglob("*.partial"))
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv")
    assert manifest.video_id.nunique() == 18 and len(manifest) == 18 * 12
    for path in manifest.path:
        with Image.open(tmp_path / "out" / path) as crop:
            crop.load()  # every crop is whole, none half-written
    from fakefinder.config import load_config
    from fakefinder.faces.prepare import prepare

    again = prepare(load_config(cfg), progress=False)
    assert again.processed == 0

    # an uninterrupted run gives the same manifest
    fresh = prepare(load_config(cfg, [f"prepare.output_dir={tmp_path / 'fresh'}"]), progress=False)
    key = ["video_id", "frame_index"]
    a = manifest.sort_values(key).reset_index(drop=True)
    b = pd.read_csv(fresh.manifest_path).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a.drop(columns=["score"]), b.drop(columns=["score"]))


def test_heap_growth_limit_is_applied_on_linux():
    import subprocess
    import sys

    # in a child process: the setting is process-wide and would slow every later test here
    code = "from fakefinder.core.memory import limit_heap_growth; print(limit_heap_growth())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sys.platform.startswith("linux"))


def test_in_process_prepare_leaves_the_callers_threads_and_heap_alone(trees, tmp_path, monkeypatch):
    """Preparing in the caller's process (no workers, one item, or nothing left to do) must not
    leave worker settings behind: training right after it would run on one thread."""
    import torch

    from fakefinder.core import memory

    calls = []
    monkeypatch.setattr(memory, "limit_heap_growth", lambda *a: calls.append(a) or True)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        config = make_config(
            tmp_path / "out",
            [ds("crops", "csv", trees["csv"])],
            faces={"detect": False, "size": 32},
            prepare={"num_workers": 0, "torch_threads": 1},
        )
        fakefinder.prepare(config, progress=False)  # everything in this process
        fakefinder.prepare(config, progress=False)  # nothing left to do
        assert torch.get_num_threads() == 2 and not calls
    finally:
        torch.set_num_threads(threads)


def test_two_prepares_never_write_one_folder_at_once(trees, tmp_path):
    from fakefinder.core.runlock import RunFolderError, RunLock

    config = make_config(tmp_path / "out", [{"name": "f", "layout": "folder", "root": str(trees["folder"])}])
    with RunLock(tmp_path / "out", "prepare", "fakefinder prepare"):  # a whole run is going on
        with pytest.raises(RunFolderError, match="is in use: fakefinder prepare"):
            fakefinder.prepare(config, progress=False)
        with pytest.raises(RunFolderError, match="is in use"):
            fakefinder.prepare(config, shard="0/2", progress=False)
    with RunLock(tmp_path / "out", "prepare-shard-1-of-2", "fakefinder prepare --shard 1/2"):
        fakefinder.prepare(config, shard="0/2", progress=False)  # another shard may run beside it
        with pytest.raises(RunFolderError, match="--shard 1/2"):
            fakefinder.prepare(config, progress=False)  # but not a whole run
    result = fakefinder.prepare(config, progress=False)  # resume by rerun still works
    assert result.summary["items_ok"] >= 1 and not list((tmp_path / "out").glob(".*.lock"))


def test_ffpp_mask_videos_become_mask_crops_cut_like_the_faces(trees, tmp_path):
    from fakefinder.faces.detectors import crop_window
    from fakefinder.faces.truth import truth_for
    from fakefinder.media.images import load_rgb

    root = tmp_path / "ffpp"
    shutil.copytree(trees["ffpp"], root)
    height, width = SMALL_VIDEO["size"]
    for video in (root / "manipulated_sequences/Deepfakes/c23/videos").glob("*.mp4"):
        synthetic.write_mask_video(  # the top half of every frame changed
            root / "manipulated_sequences/Deepfakes/masks/videos" / video.name,
            SMALL_VIDEO["num_frames"],
            SMALL_VIDEO["size"],
        )
    out = tmp_path / "out"
    config = make_config(
        out, [ds("ffpp", "ffpp", root)], faces={"detector": "mtcnn", "fallback": ["retinaface"]}
    )
    manifest = check_manifest(fakefinder.prepare(config, progress=False))
    masked = manifest.mask_path.fillna("") != ""
    assert (
        set(manifest[masked].method) == {"Deepfakes"}
        and masked.sum() == (manifest.method == "Deepfakes").sum()
    )
    for row in manifest[masked].itertuples():
        with Image.open(out / row.mask_path) as opened:
            assert opened.mode == "L" and opened.size == (64, 64)
            mask = np.asarray(opened, np.float32)
        left, top, right, bottom = crop_window((row.x1, row.y1, row.x2, row.y2), config.faces)
        frame_y = top + (np.arange(64) + 0.5) * (bottom - top) / 64  # each crop row's height in the frame
        clear = np.abs(frame_y - height / 2) > 3 * (bottom - top) / 64
        upper, lower = clear & (frame_y < height / 2), clear & (frame_y > height / 2)
        assert upper.any() and lower.any(), "the face window should cross the changed half's edge"
        assert mask[upper].mean() > 200 and mask[lower].mean() < 40
    row = manifest[masked].iloc[0]
    truth = truth_for(load_rgb(out / row.path, 64), mask_file=out / row.mask_path)
    assert truth.origin == "dataset_mask" and 0.1 < truth.mask.mean() < 0.9
