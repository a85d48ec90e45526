from pathlib import Path

import av
import numpy as np
import pytest

from fakefinder.media.video import VideoError, probe, read_frames, sample_indices
from fakefinder.synthetic import write_video


def counting_video(
    path: Path, num_frames: int, gop: int | None = None, size=(64, 96), rotation: int = 0
) -> Path:
    """Frame i is a flat grey of level 4*i (so the decoded mean tells the frame index), with a
    white marker in the top-left corner (so orientation is visible)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "qp": "0", **({"g": str(gop)} if gop else {})}
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            image = np.full((*size, 3), 4 * i % 256, np.uint8)
            image[:8, :8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def level(image: np.ndarray) -> int:
    return int(round(np.median(image) / 4))


def test_sample_indices_even_and_strided():
    assert sample_indices(300, 4) == [37, 112, 187, 262]
    assert sample_indices(5, 32) == [0, 1, 2, 3, 4]
    assert sample_indices(100, 3, stride=10) == [0, 10, 20]
    assert sample_indices(0, 8) == []


@pytest.mark.parametrize("seek", ["never", "always", "auto"])
def test_read_frames_returns_the_requested_frames(tmp_path, seek):
    path = counting_video(tmp_path / "count.mp4", 60, gop=10)
    assert probe(path).num_frames == 60
    frames = list(read_frames(path, count=6, seek=seek))
    indices = [i for i, _ in frames]
    assert indices == sample_indices(60, 6)
    assert [level(img) for _, img in frames] == indices
    assert all(img.shape == (64, 96, 3) and img.dtype == np.uint8 for _, img in frames)


def test_auto_seeks_only_when_targets_are_far_apart(tmp_path, monkeypatch):
    import fakefinder.media.video as video

    calls = []
    original = video._decode_by_seeking
    monkeypatch.setattr(video, "_decode_by_seeking", lambda *a: calls.append(1) or original(*a))
    long_gop = counting_video(tmp_path / "long_gop.mp4", 120, gop=250)
    list(read_frames(long_gop, count=4, seek="auto"))
    assert calls == []
    short_gop = counting_video(tmp_path / "short_gop.mp4", 120, gop=5)
    frames = list(read_frames(short_gop, count=4, seek="auto"))
    assert calls == [1]
    assert [level(img) for _, img in frames] == [i % 64 for i in sample_indices(120, 4)]  # levels wrap at 64


def test_rotation_metadata_is_applied(tmp_path):
    path = counting_video(tmp_path / "rot.mp4", 4, size=(64, 96), rotation=90)
    (_, image), *_ = read_frames(path, count=1)
    assert image.shape == (96, 64, 3)  # portrait after rotation
    # the marker from the top-left corner moves to the bottom-left (90 degrees counter-clockwise)
    assert image[-4:, :4].mean() > 200 and image[:4, :4].mean() < 200


def test_bad_files_raise_video_error(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        list(read_frames(empty))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError):
        list(read_frames(garbage))
    with pytest.raises(VideoError, match="not found"):
        list(read_frames(tmp_path / "missing.mp4"))


def test_truncated_video_yields_what_it_has_or_fails_cleanly(tmp_path):
    path = write_video(tmp_path / "full.mp4", num_frames=30, size=(96, 128))
    data = path.read_bytes()
    half = tmp_path / "half.mp4"
    half.write_bytes(data[: len(data) // 2])
    try:
        frames = list(read_frames(half, count=8))
    except VideoError:
        return  # nothing decodable is a clean, named failure
    assert 0 < len(frames) <= 8


def test_dropping_unsampled_b_frames_keeps_the_sampled_ones_bit_exact(tmp_path):
    """Forward decoding drops non-reference frames that are not sampled; the sampled frames are
    the pixels a full decode gives (a clip with B-frames, long GOP, rotation metadata)."""
    import av

    from fakefinder.media.video import _to_rgb, read_frames, sample_indices
    from fakefinder.synthetic import write_footage

    path = write_footage(tmp_path / "b.mp4", num_frames=60, size=(160, 96), faces=1, portrait=True, gop=60)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        full = [_to_rgb(frame) for frame in container.decode(stream)]
        kinds = {str(frame.pict_type) for frame in av.open(str(path)).decode(video=0)}
    assert len(full) == 60 and "3" in kinds  # B-frames present
    targets = sample_indices(60, 8)
    got = list(read_frames(path, count=8, seek="never"))
    assert [i for i, _ in got] == targets
    for index, image in got:
        assert image.shape == (160, 96, 3)  # upright portrait
        np.testing.assert_array_equal(image, full[index])


def test_irregular_timestamps_still_give_every_sampled_frame(tmp_path):
    """Frames whose timestamps jump (dropped frames, variable rate) cannot be placed by time: the
    decoder counts them instead, and every sampled frame comes back."""
    from fractions import Fraction

    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.height, stream.width, stream.pix_fmt = 64, 96, "yuv420p"
        stream.time_base = Fraction(1, 25)
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(np.full((64, 96, 3), 4 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i + (7 if i >= 20 else 0), Fraction(1, 25)  # a 7-frame gap
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    got = list(read_frames(path, count=8, seek="never"))
    assert len(got) == 8 and len({i for i, _ in got}) == 8


def test_generated_footage_knows_where_its_faces_are(tmp_path):
    """`write_footage(truth=...)` records each frame's true face boxes in upright frame
    coordinates: MTCNN finds both people there (the second one mirrored), in a portrait clip too."""
    from fakefinder.faces.detectors import create_detector, iou
    from fakefinder.media.video import read_frames
    from fakefinder.synthetic import write_footage

    detector = create_detector("mtcnn", min_score=0.9)
    for portrait in (False, True):
        truth: list = []
        path = write_footage(
            tmp_path / f"t{portrait}.mp4",
            num_frames=20,
            size=(360, 640),
            portrait=portrait,
            identity=3,
            gop=20,
            seed=5,
            truth=truth,
        )
        assert len(truth) == 20 and all(len(boxes) == 2 for boxes in truth)
        for index, image in read_frames(path, count=3):
            found = detector.detect([image])[0]
            for box in truth[index]:
                assert max(iou(box, face.box) for face in found) > 0.8, (portrait, index, box)
