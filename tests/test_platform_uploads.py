"""Uploaded datasets: malicious and broken ZIPs are refused leaving nothing behind; good ones are
unpacked (wrapper folder stripped) and described with the right layout, counts and kinds."""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import struct
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from PIL import Image

from fakefinder import synthetic
from fakefinder.core.errors import FakefinderError
from fakefinder.platform import uploads
from fakefinder.platform.uploads import (
    DatasetNotFoundError,
    UploadError,
    ZipLimits,
    describe_dataset,
    list_datasets,
    safe_member_name,
    unpack_zip,
)


def png_bytes(shade: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, shade, shade)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(path: Path, members, compression=zipfile.ZIP_DEFLATED) -> Path:
    """members: {name: bytes} or [(name or ZipInfo, bytes)]."""
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in items:
            archive.writestr(name, data)
    return path


def zip_folder(folder: Path, path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, prefix + file.relative_to(folder).as_posix())
    return path


def central_entries(data: bytes) -> list[int]:
    """Offsets of the central directory headers, in order."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        offset, count = archive.start_dir, len(archive.infolist())
    offsets = []
    for _ in range(count):
        assert data[offset : offset + 4] == b"PK\x01\x02"
        offsets.append(offset)
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, offset + 28)
        offset += 46 + name_len + extra_len + comment_len
    return offsets


def patch(data: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "datasets"
    path.mkdir()
    return path


def refused(
    source, root: Path, field: str = "file", limits: ZipLimits = ZipLimits(), name: str | None = "ds"
) -> str:
    """Unpacking must fail on `field` and leave `root` as it was; returns the message."""
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(UploadError) as caught:
        unpack_zip(source, root, name, limits)
    assert caught.value.field == field
    assert sorted(p.name for p in root.iterdir()) == before, "the upload left something behind"
    return str(caught.value)


# ----------------------------------------------------------------------------------------------
# member names


def test_safe_member_name_normalises_and_refuses():
    assert safe_member_name("a/./b//c.jpg") == PurePosixPath("a/b/c.jpg")
    assert safe_member_name("folder\\img.png") == PurePosixPath("folder/img.png")
    assert safe_member_name("dir/") == PurePosixPath("dir")
    for bad in (
        "../x",
        "a/../../x",
        "/abs",
        "\\\\server\\share",
        "C:/x",
        "c:x",
        "..\\..\\x",
        "a\x00b",
        "a\nb",
        "",
        "./",
        "//",
    ):
        with pytest.raises(UploadError) as caught:
            safe_member_name(bad)
        assert caught.value.field == "file" and repr(bad) in str(caught.value)


def test_upload_error_is_a_fakefinder_value_error_and_pickles():
    error = UploadError("bad name", field="name")
    assert isinstance(error, FakefinderError) and isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert copy.field == "name" and str(copy) == "bad name"
    assert DatasetNotFoundError("x").field == "name"


# ----------------------------------------------------------------------------------------------
# malicious and broken ZIPs


@pytest.mark.parametrize(
    "member, words",
    [
        ("../../etc/passwd", "'..'"),
        ("/abs/path", "absolute"),
        ("a/../../x", "'..'"),
        ("..\\..\\evil.txt", "'..'"),
        ("C:/Windows/evil.txt", "drive letter"),
        ("ok/\x07bell.txt", "control character"),
    ],
)
def test_path_tricks_are_refused(tmp_path, root, member, words):
    source = make_zip(tmp_path / "evil.zip", [("good/a.txt", b"fine"), (member, b"evil")])
    message = refused(source, root)
    assert words in message and repr(member) in message
    assert not (tmp_path / "etc").exists() and not Path("/abs/path").exists()


def test_nul_in_a_member_name_is_refused(tmp_path, root):
    data = make_zip(tmp_path / "nul.zip", {"abXcd.txt": b"x"}).read_bytes()
    data = data.replace(b"abXcd", b"ab\x00cd")  # local header and central directory
    message = refused(io.BytesIO(data), root)
    assert "NUL" in message


@pytest.mark.parametrize(
    "kind, words",
    [
        (stat.S_IFLNK, "symbolic link"),
        (stat.S_IFIFO, "not a regular file"),
        (stat.S_IFCHR, "not a regular file"),
    ],
)
def test_links_and_special_files_are_refused(tmp_path, root, kind, words):
    info = zipfile.ZipInfo("data/link")
    info.create_system = 3
    info.external_attr = (kind | 0o777) << 16
    source = make_zip(tmp_path / "link.zip", [("data/a.txt", b"a"), (info, b"../../../etc/passwd")])
    message = refused(source, root)
    assert words in message and "data/link" in message


def test_zip_bomb_member_is_refused_before_writing(tmp_path, root):
    source = make_zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(4 * 1024 * 1024)})
    info = zipfile.ZipFile(source).getinfo("zeros.bin")
    assert info.file_size / info.compress_size > 200
    message = refused(source, root)
    assert "zeros.bin" in message and "200" in message and "expand" in message


def test_archive_ratio_counts_all_members(tmp_path, root):
    members = {f"z{n}.bin": bytes(300_000) for n in range(4)}  # each under the floor, together over it
    limits = ZipLimits(ratio_floor_bytes=1_000_000)
    message = refused(make_zip(tmp_path / "many.zip", members), root, limits=limits)
    assert "the ZIP would expand" in message


@pytest.mark.parametrize(
    "limits, words",
    [
        (ZipLimits(max_files=3), "more than 3 files"),
        (ZipLimits(max_member_bytes=1000), "over the limit of 1000 bytes per file"),
        (ZipLimits(max_bytes=3000), "more than 3000 bytes"),
    ],
)
def test_declared_sizes_and_counts_over_the_limits(tmp_path, root, limits, words):
    members = {f"f{n}.bin": bytes(range(256)) * 5 for n in range(5)}  # 1280 bytes each
    message = refused(make_zip(tmp_path / "big.zip", members), root, limits=limits)
    assert words in message


def test_member_that_declares_less_than_it_holds(tmp_path, root):
    """The central directory says 10 bytes; zipfile stops there and the CRC check fails."""
    data = make_zip(tmp_path / "lie.zip", {"a.txt": b"fine", "big.bin": bytes(200_000)}).read_bytes()
    data = patch(data, central_entries(data)[1] + 24, "<I", 10)
    message = refused(io.BytesIO(data), root)
    assert "big.bin" in message and "cannot be unpacked" in message


def test_member_that_declares_more_than_it_holds(tmp_path, root):
    data = make_zip(tmp_path / "lie.zip", {"a.txt": b"fine" * 100}).read_bytes()
    data = patch(data, central_entries(data)[0] + 24, "<I", 5000)
    message = refused(io.BytesIO(data), root)
    assert "unpacks to 400 bytes but declares 5000" in message


def test_streaming_counter_stops_a_member_larger_than_declared(tmp_path, root, monkeypatch):
    """Whatever the decompressor yields is counted: more than declared is refused mid-stream."""
    source = make_zip(tmp_path / "ok.zip", {"a.txt": b"first", "b.bin": b"x" * 100})
    real_open = zipfile.ZipFile.open

    def lying_open(self, member, *args, **kwargs):
        name = member.filename if isinstance(member, zipfile.ZipInfo) else member
        if name == "b.bin":
            return io.BytesIO(b"x" * 10_000_000)
        return real_open(self, member, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)
    message = refused(source, root)
    assert "'b.bin' unpacks to more than the 100 bytes it declares" in message


def test_streaming_counter_enforces_the_total_limit(tmp_path, root, monkeypatch):
    source = make_zip(tmp_path / "ok.zip", {"a.bin": b"a" * 600, "b.bin": b"b" * 600})
    monkeypatch.setattr(
        uploads,
        "_checked_members",
        lambda archive, limits: [
            uploads._Member(info, PurePosixPath(info.filename), False) for info in archive.infolist()
        ],
    )
    message = refused(source, root, limits=ZipLimits(max_bytes=1000))
    assert "more than 1000 bytes" in message and "b.bin" in message


def test_overlapping_members_are_refused(tmp_path, root):
    data = make_zip(
        tmp_path / "overlap.zip", {"a.bin": b"a" * 1000, "b.bin": b"b" * 1000}, zipfile.ZIP_STORED
    ).read_bytes()
    data = patch(data, central_entries(data)[1] + 42, "<I", 0)  # b's local header offset -> a's
    message = refused(io.BytesIO(data), root)
    assert "overlaps" in message


def test_encrypted_member_is_refused(tmp_path, root):
    data = make_zip(tmp_path / "enc.zip", {"a.txt": b"secret"}).read_bytes()
    data = patch(data, 6, "<H", 0x1)  # local header flags
    data = patch(data, central_entries(data)[0] + 8, "<H", 0x1)
    message = refused(io.BytesIO(data), root)
    assert "encrypted" in message and "a.txt" in message


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "corrupt_data"])
def test_broken_archives_leave_nothing(tmp_path, root, damage):
    data = make_zip(
        tmp_path / "ok.zip",
        {"first.bin": bytes(range(256)) * 50, "second.bin": bytes(range(255, -1, -1)) * 50},
    ).read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = b"this is not a zip file\n" * 50
    elif damage == "empty":
        data = b""
    else:  # flip bytes inside the second member's compressed data: the first is already written
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            info = archive.getinfo("second.bin")
        start = info.header_offset + 30 + len("second.bin") + 10
        data = data[:start] + bytes(b ^ 0xFF for b in data[start : start + 40]) + data[start + 40 :]
    path = tmp_path / "broken.zip"
    path.write_bytes(data)
    message = refused(path, root)
    if damage == "corrupt_data":
        assert "second.bin" in message
    else:
        assert "not a readable ZIP" in message


def test_a_zip_of_nothing_useful_is_refused(tmp_path, root):
    source = make_zip(tmp_path / "mac.zip", {"__MACOSX/._a": b"x", "folder/.DS_Store": b"x", "empty/": b""})
    assert "holds no files" in refused(source, root)


def test_file_and_folder_clash_and_duplicates(tmp_path, root):
    clash = make_zip(tmp_path / "clash.zip", {"a": b"file", "a/b.txt": b"inner"})
    assert "both a file and a folder" in refused(clash, root)
    twice = make_zip(tmp_path / "twice.zip", [("x/a.txt", b"1"), ("x/./a.txt", b"2")])
    assert "'x/./a.txt' appears twice" in refused(twice, root)
    with pytest.warns(UserWarning, match="Duplicate name"):
        same = make_zip(tmp_path / "same.zip", [("x/a.txt", b"1"), ("x/a.txt", b"2")])
    assert "appears twice" in refused(same, root)


@pytest.mark.parametrize("name", ["", "../up", ".hidden", "a b", "x" * 65, "-dash", "a/b", None])
def test_bad_dataset_names(tmp_path, root, name):
    source = make_zip(tmp_path / "ok.zip", {"a.txt": b"a"})
    refused(source, root, field="name", name=name)


def test_existing_dataset_name_is_refused(tmp_path, root):
    (root / "taken").mkdir()
    (root / "taken" / "keep.txt").write_text("mine")
    message = refused(make_zip(tmp_path / "ok.zip", {"a.txt": b"a"}), root, field="name", name="taken")
    assert "'taken' already exists" in message
    assert (root / "taken" / "keep.txt").read_text() == "mine"


def test_missing_upload_file(tmp_path, root):
    assert "no uploaded file" in refused(tmp_path / "nothing.zip", root)


# ----------------------------------------------------------------------------------------------
# good ZIPs, described


def class_folder_members(prefix: str) -> dict[str, bytes]:
    image = png_bytes()
    members = {f"{prefix}train/real/r{n}.png": image for n in range(3)}
    members |= {f"{prefix}train/fake/f{n}.png": image for n in range(2)}
    members |= {f"{prefix}val/real/r.png": image, f"{prefix}val/fake/f.png": image}
    members |= {
        "__MACOSX/": b"",
        f"__MACOSX/{prefix}._train": b"junk",
        f"{prefix}train/.DS_Store": b"junk",
        f"{prefix}val/": b"",
    }
    return members


def test_class_folders_in_a_wrapper_folder(tmp_path, root):
    source = io.BytesIO(make_zip(tmp_path / "cls.zip", class_folder_members("my data/")).read_bytes())
    path = unpack_zip(source, root, "cls")
    assert path == root / "cls"
    assert sorted(p.name for p in root.iterdir()) == ["cls"]  # no staging folder left
    assert sorted(p.name for p in path.iterdir()) == ["train", "val"]
    assert not list(path.rglob(".DS_Store"))
    described = describe_dataset(path)
    assert described["layout"] == "class_folders" and described["kinds"] == ["image_classifier"]
    assert described["splits"] == {"train": {"fake": 2, "real": 3}, "val": {"fake": 1, "real": 1}}
    assert described["files"] == 7 and described["bytes"] == 7 * len(png_bytes())
    assert described["name"] == "cls" and described["path"] == str(path)
    assert "test" in described["note"]


def test_class_folders_missing_val_are_noted(tmp_path, root):
    members = {k: v for k, v in class_folder_members("").items() if "val/" not in k}
    path = unpack_zip(make_zip(tmp_path / "cls.zip", members), root, "half")
    described = describe_dataset(path)
    assert described["layout"] == "class_folders" and described["kinds"] == []
    assert described["splits"] == {"train": {"fake": 2, "real": 3}}
    assert "val" in described["note"]


def test_a_single_layout_folder_is_not_stripped(tmp_path, root):
    path = unpack_zip(make_zip(tmp_path / "t.zip", {"train/a/x.png": b"1", "train/b/y.png": b"2"}), root, "t")
    assert (path / "train" / "a" / "x.png").is_file()


def test_prepared_manifest(tmp_path, root):
    lines = ["dataset,video_id,group,label,method,split,frame_index,face_index,path"]
    members = {}
    for split, n in (("train", 3), ("val", 1), ("test", 1)):
        for label in ("real", "fake"):
            for k in range(n):
                rel = f"a/{split}/{label}/v{k}/000000_0.jpg"
                members[f"prep/{rel}"] = png_bytes()
                lines.append(f"a,a:v{k}_{label},g{k},{label},{label},{split},0,0,{rel}")
    members["prep/manifest.csv"] = ("\n".join(lines) + "\n").encode()
    members["prep/summary.json"] = b"{}"
    path = unpack_zip(make_zip(tmp_path / "prep.zip", members), root, "faces")
    described = describe_dataset(path)
    assert described["layout"] == "prepared" and described["kinds"] == ["deepfake_detector"]
    assert described["splits"] == {
        "train": {"fake": 3, "real": 3},
        "val": {"fake": 1, "real": 1},
        "test": {"fake": 1, "real": 1},
    }
    assert list(described["splits"]) == ["train", "val", "test"]
    assert described["note"] == ""
    (path / "a/train/real/v0/000000_0.jpg").unlink()
    assert "1 of 10 checked crops are missing" in describe_dataset(path)["note"]


def llava_sample(sample_id: str, image: str, answer: str, label=None) -> dict:
    sample = {
        "id": sample_id,
        "image": image,
        "conversations": [
            {"from": "human", "value": "<image>\nIs this face real or fake?"},
            {"from": "gpt", "value": answer},
        ],
    }
    if label is not None:
        sample["binary_label"] = label
    return sample


def test_llava_json(tmp_path, root):
    train = [
        llava_sample("t0", "t0.png", "Looks fine.\n### Answer: real"),
        llava_sample("t1", "t1.png", "A blending seam.\n### Answer: fake"),
        llava_sample("t2", "t2.png", "Hard to say.", label=1),
        llava_sample("t3", "t3.png", "It could be real or fake."),
    ]
    val = [llava_sample("v0", "v0.png", "This face appears manipulated.")]
    members = {"train.json": json.dumps(train).encode(), "val.json": json.dumps(val).encode()}
    members |= {f"images/{s['image']}": png_bytes() for s in train + val}
    path = unpack_zip(make_zip(tmp_path / "dx.zip", members), root, "dx")
    described = describe_dataset(path)
    assert described["layout"] == "llava_json" and described["kinds"] == ["dx_llava"]
    assert described["splits"] == {"train": {"ambiguous": 1, "fake": 2, "real": 1}, "val": {"fake": 1}}
    assert "1 sample(s) of train.json" in described["note"]


def test_llava_json_with_a_missing_image(tmp_path, root):
    dataset = root / "dx"
    dataset.mkdir()
    (dataset / "train.json").write_text(json.dumps([llava_sample("t0", "gone.png", "### Answer: real")]))
    described = describe_dataset(dataset)
    assert described["layout"] == "llava_json" and described["kinds"] == []
    assert "gone.png" in described["note"]


def test_instruction_jsonl(tmp_path, root):
    lines = [
        json.dumps({"instruction": "Say yes", "response": "yes"}),
        json.dumps({"instruction": "Hm", "response": ""}),
        json.dumps(
            {"conversations": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
        ),
    ]
    members = {"train.jsonl": "\n".join(lines).encode(), "test.jsonl": lines[0].encode()}
    path = unpack_zip(make_zip(tmp_path / "llm.zip", members), root, "llm")
    described = describe_dataset(path)
    assert described["layout"] == "instruction_jsonl" and described["kinds"] == ["llm_lora", "llm_qlora"]
    assert described["splits"] == {"train": {"examples": 2}, "test": {"examples": 1}}
    assert (
        "train.jsonl: 1 line(s) with an empty response" in described["note"]
        and "no val.jsonl" in described["note"]
    )
    (path / "train.jsonl").write_text(lines[0] + "\n{not json\n")
    broken = describe_dataset(path)
    assert broken["kinds"] == [] and f"{path / 'train.jsonl'}:2: not valid JSON" in broken["note"]


def test_raw_folder_layout(tmp_path, root):
    tree = synthetic.make_folder_tree(tmp_path / "tree", images=2, videos=0)
    path = unpack_zip(zip_folder(tree, tmp_path / "raw.zip", prefix="tree/"), root, "raw")
    described = describe_dataset(path)
    assert described["layout"] == "folder" and described["kinds"] == ["prepare"]
    assert described["splits"] == {"unsplit": {"fake": 2, "real": 2}}
    assert described["prepare"] == {"layout": "folder", "root": str(path)}
    assert "prepare job" in described["note"]


def test_raw_ffpp_layout(tmp_path, root):
    tree = synthetic.make_ffpp_tree(
        tmp_path / "ffpp", ids=("000", "001"), methods=("Deepfakes",), num_frames=2, size=(32, 32)
    )
    (tree / "splits").mkdir()
    (tree / "splits" / "test.json").write_text(json.dumps([["000", "001"]]))
    path = unpack_zip(zip_folder(tree, tmp_path / "ffpp.zip"), root, "ffpp")
    described = describe_dataset(path)
    assert described["layout"] == "ffpp" and described["kinds"] == ["prepare"]
    assert described["splits"] == {"test": {"fake": 2, "real": 2}}
    assert described["prepare"]["compression"] == "c23"


def test_raw_csv_layout_and_unknown(tmp_path, root):
    listed = root / "listed"
    (listed / "img").mkdir(parents=True)
    (listed / "img" / "a.png").write_bytes(png_bytes())
    (listed / "list.csv").write_text("file,label,split\nimg/a.png,real,train\nimg/b.png,fake,test\n")
    described = describe_dataset(listed)
    assert described["layout"] == "csv" and described["prepare"]["csv_file"] == "list.csv"
    assert described["splits"] == {"train": {"real": 1}, "test": {"fake": 1}}
    assert "b.png" in described["note"]  # listed but missing on disk
    other = root / "other"
    other.mkdir()
    (other / "readme.txt").write_text("hello")
    described = describe_dataset(other)
    assert described["layout"] == "unknown" and described["kinds"] == []
    assert "manifest.csv" in described["note"]
    with pytest.raises(DatasetNotFoundError):
        describe_dataset(root / "absent")


def test_list_datasets_skips_hidden_and_never_raises(tmp_path, root, monkeypatch):
    unpack_zip(make_zip(tmp_path / "cls.zip", class_folder_members("")), root, "cls")
    (root / ".upload-stale").mkdir()
    (root / "broken").mkdir()
    (root / "broken" / "train.json").write_text("[not json")
    (root / "weird").mkdir()
    (root / "notes.txt").write_text("not a folder")
    real = uploads.describe_dataset

    def describe(path):
        if path.name == "weird":
            raise RuntimeError("disk on fire")
        return real(path)

    monkeypatch.setattr(uploads, "describe_dataset", describe)
    listed = {d["name"]: d for d in list_datasets(root)}
    assert sorted(listed) == ["broken", "cls", "weird"]
    assert listed["cls"]["layout"] == "class_folders"
    assert listed["broken"]["layout"] == "llava_json" and "not valid JSON" in listed["broken"]["note"]
    assert listed["weird"]["layout"] == "unknown" and "disk on fire" in listed["weird"]["note"]
    assert list_datasets(tmp_path / "nowhere") == []


def test_clean_staging_removes_only_old_temporary_folders(root):
    old, new = root / ".upload-old", root / ".upload-new"
    old.mkdir()
    new.mkdir()
    os.utime(old, (0, 0))
    assert uploads.clean_staging(root) == [old]
    assert new.is_dir() and not old.exists()
