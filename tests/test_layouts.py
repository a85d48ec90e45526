import json
import shutil
from collections import Counter

import pytest

from fakefinder.config import DatasetConfig
from fakefinder.faces.layouts import LayoutError, read_dataset, read_datasets


def spec(name, layout, root, **kw):
    return DatasetConfig(name=name, layout=layout, root=root, **kw)


def test_ffpp_reads_originals_and_every_method(trees):
    items = read_dataset(spec("ff", "ffpp", trees["ffpp"]))
    by_method = Counter(i.method for i in items)
    assert by_method == {"original": 4, "Deepfakes": 4, "Face2Face": 4}
    fake = next(i for i in items if i.path.name == "000_001.mp4" and i.method == "Deepfakes")
    assert fake.label == "fake"
    assert set(fake.links) == {"yt:000", "yt:001"}
    assert fake.source_video_id == "ff:original_sequences/youtube/c23/videos/000"
    # the same file name under two methods gives two distinct video ids
    ids = [i.video_id for i in items if i.path.name == "000_001.mp4"]
    assert len(ids) == len(set(ids)) == 2
    assert len({i.video_id for i in items}) == len(items)


def test_ffpp_method_filter_compression_and_official_splits(trees, tmp_path):
    items = read_dataset(spec("ff", "ffpp", trees["ffpp"], methods=["Face2Face"]))
    assert {i.method for i in items} == {"original", "Face2Face"}
    with pytest.raises(LayoutError, match="c40"):
        read_dataset(spec("ff", "ffpp", trees["ffpp"], compression="c40"))
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "train.json").write_text(json.dumps([["000", "001"]]))
    (splits / "test.json").write_text(json.dumps([["002", "003"]]))
    items = read_dataset(spec("ff", "ffpp", trees["ffpp"], splits_dir=splits))
    official = {i.path.stem: i.official_split for i in items if i.method in ("original", "Deepfakes")}
    assert official["000"] == official["001_000"] == "train"
    assert official["003"] == official["002_003"] == "test"


def test_ffpp_deepfakedetection_actor_names(tmp_path):
    root = tmp_path / "ff"
    (root / "original_sequences/actors/c23/videos").mkdir(parents=True)
    (root / "manipulated_sequences/DeepFakeDetection/c23/videos").mkdir(parents=True)
    (root / "original_sequences/actors/c23/videos/01__walk.mp4").write_bytes(b"x")
    (root / "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__walk__ABCD1234.mp4").write_bytes(b"x")
    items = read_dataset(spec("ff", "ffpp", root))
    fake = next(i for i in items if i.label == "fake")
    assert set(fake.links) == {"actor:01", "actor:02"}
    assert next(i for i in items if i.label == "real").links == ("actor:01",)


def test_dfdc_labels_originals_and_missing_metadata_entry(trees, tmp_path):
    items = read_dataset(spec("dfdc", "dfdc", trees["dfdc"]))
    assert Counter(i.label for i in items) == {"real": 3, "fake": 6}
    fake = next(i for i in items if i.label == "fake")
    real_name = json.loads((fake.path.parent / "metadata.json").read_text())[fake.path.name]["original"]
    assert fake.links == (f"dfdc:{real_name}",)
    # a video that metadata.json does not describe becomes a known problem, not a crash
    root = tmp_path / "dfdc"
    shutil.copytree(trees["dfdc"], root)
    shutil.copy(fake.path, root / "dfdc_train_part_0" / "stray.mp4")
    stray = next(i for i in read_dataset(spec("dfdc", "dfdc", root)) if i.path.name == "stray.mp4")
    assert "no entry" in stray.problem and "metadata.json" in stray.problem


def test_dfdc_malformed_metadata_names_the_file(tmp_path):
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "metadata.json").write_text("{not json")
    with pytest.raises(LayoutError, match="metadata.json"):
        read_dataset(spec("d", "dfdc", tmp_path))


def test_celebdf_folders_and_official_test_list(trees):
    items = read_dataset(spec("cdf", "celebdf", trees["celebdf"]))
    assert Counter(i.method for i in items) == {"Celeb-real": 6, "celebdf": 6, "YouTube-real": 2}
    test = {i.path.relative_to(trees["celebdf"]).as_posix() for i in items if i.official_split == "test"}
    assert test == {"Celeb-real/id0_0000.mp4", "Celeb-synthesis/id0_id1_0000.mp4", "YouTube-real/00000.mp4"}
    fake = next(i for i in items if i.path.name == "id2_id0_0001.mp4")
    assert fake.links == ("celeb:id2_0001",)


def test_folder_any_depth_images_and_videos(trees):
    items = read_dataset(spec("f", "folder", trees["folder"]))
    assert Counter((i.label, i.kind) for i in items) == {
        ("real", "image"): 2,
        ("real", "video"): 1,
        ("fake", "image"): 2,
        ("fake", "video"): 1,
    }


def test_csv_list_with_groups_and_splits(trees):
    items = read_dataset(spec("c", "csv", trees["csv"]))
    assert len(items) == 20
    assert {i.official_split for i in items} == {"train", "val", "test"}
    pair = [i for i in items if i.links == ("group:g000",)]
    assert Counter(i.label for i in pair) == {"real": 1, "fake": 1}


def test_csv_bad_rows_name_the_line(tmp_path):
    (tmp_path / "metadata.csv").write_text("file,label\na.jpg,real\nb.jpg,maybe\n")
    with pytest.raises(LayoutError, match=r"metadata.csv line 3.*maybe"):
        read_dataset(spec("c", "csv", tmp_path))
    (tmp_path / "metadata.csv").write_text("path,label\na.jpg,real\n")
    with pytest.raises(LayoutError, match="missing column"):
        read_dataset(spec("c", "csv", tmp_path))


@pytest.mark.parametrize(
    "layout, fragment",
    [
        ("ffpp", "original_sequences"),
        ("dfdc", "metadata.json"),
        ("celebdf", "Celeb-real"),
        ("folder", "real/ and fake/"),
        ("csv", "metadata.csv"),
    ],
)
def test_wrong_root_fails_fast_naming_path_and_layout(tmp_path, layout, fragment):
    wrong = tmp_path / "empty"
    wrong.mkdir()
    with pytest.raises(LayoutError) as info:
        read_dataset(spec("x", layout, wrong))
    assert str(wrong) in str(info.value)
    assert fragment in str(info.value)


def test_several_datasets_keep_their_tags(trees):
    items = read_datasets([spec("a", "ffpp", trees["ffpp"]), spec("b", "dfdc", trees["dfdc"])])
    assert {i.dataset for i in items} == {"a", "b"}
    assert all(i.video_id.startswith(f"{i.dataset}:") for i in items)
