import numpy as np
import pytest

from fakefinder.config import FacesConfig
from fakefinder.faces import detectors as faces_module
from fakefinder.faces.detectors import (
    DetectorChain,
    Face,
    FaceDetector,
    FaceSelector,
    create_detector,
    crop_face,
    iou,
    register_detector,
)
from fakefinder.synthetic import background_frame, frame_with_face


@pytest.fixture(scope="module")
def frame():
    return frame_with_face((360, 480), identity=0, t=0.1)


def box_center(frame_shape, face: Face):
    x1, y1, x2, y2 = face.box
    return (x1 + x2) / 2 / frame_shape[1], (y1 + y2) / 2 / frame_shape[0]


@pytest.mark.parametrize("name", ["mtcnn", "retinaface", "mediapipe", "mediapipe_short", "opencv"])
def test_each_shipped_detector_finds_the_real_face(frame, name):
    found = create_detector(name, min_score=0.5).detect([frame])[0]
    assert found, name
    best = max(found, key=lambda f: f.score * f.area)
    reference = create_detector("retinaface").detect([frame])[0][0]
    assert iou(best.box, reference.box) > 0.4
    assert best.detector == name


def test_mediapipe_finds_the_astronaut_and_serves_as_fallback(monkeypatch):
    from skimage import data

    image = data.astronaut()  # the real face photo scikit-image ships (512 x 512)
    faces = create_detector("mediapipe").detect([image])[0]
    assert len(faces) == 1 and faces[0].score >= 0.9
    x1, y1, x2, y2 = faces[0].box
    assert 150 < (x1 + x2) / 2 < 240 and 80 < (y1 + y2) / 2 < 180 and 60 < x2 - x1 < 140  # her face
    config = FacesConfig(detector="opencv", fallback=["mediapipe"])
    chain = DetectorChain(config)
    monkeypatch.setattr(
        faces_module.OpenCVDetector, "_detect_batch", lambda self, images, px: [[] for _ in images]
    )
    assert [f.detector for f in chain.detect([image])[0]] == ["mediapipe"]  # what the primary missed


def test_downscaled_detection_maps_boxes_back(frame):
    detector = create_detector("mtcnn")
    full = detector.detect([frame], max_side=None)[0][0]
    small = detector.detect([frame], max_side=200)[0][0]
    assert iou(full.box, small.box) > 0.7


def test_no_face_on_background():
    assert create_detector("mtcnn").detect([background_frame((240, 320), 0.0)])[0] == []


def test_unknown_detector_lists_close_names():
    with pytest.raises(ValueError, match="mtcnn"):
        create_detector("mtcn")
    with pytest.raises(ValueError, match="unknown face detector"):
        DetectorChain(FacesConfig(detector="nope"))


class _Blind(FaceDetector):
    name = "blind"

    def _detect_batch(self, images, min_face_px):
        return [[] for _ in images]


class _Broken(FaceDetector):
    name = "broken"

    def __init__(self, **kw):
        raise ImportError("package not installed")


def test_fallback_chain_fills_frames_the_primary_missed(frame, monkeypatch):
    monkeypatch.setitem(faces_module.DETECTORS, "blind", _Blind)
    monkeypatch.setitem(faces_module.DETECTORS, "broken", _Broken)
    chain = DetectorChain(FacesConfig(detector="blind", fallback=["broken", "retinaface"]))
    assert chain.verify() == [
        "fallback face detector 'broken' is unavailable: ImportError: package not installed"
    ]
    found = chain.detect([frame, background_frame((360, 480), 0.5)])
    assert [f.detector for f in found[0]] == ["retinaface"]
    assert found[1] == []
    with pytest.raises(RuntimeError, match="'broken' could not be loaded"):
        DetectorChain(FacesConfig(detector="broken")).verify()


def test_register_detector_adds_to_registry(monkeypatch):
    monkeypatch.setattr(faces_module, "DETECTORS", dict(faces_module.DETECTORS))
    register_detector("blind", _Blind)
    assert isinstance(create_detector("blind"), _Blind)


def test_crop_margin_square_and_padding():
    image = np.zeros((100, 200, 3), np.uint8)
    image[40:60, 90:110] = 255  # a 20x20 "face"
    config = FacesConfig(margin=1.0 + 1.0, size=40)  # 2x the box: the face fills the middle half
    crop = crop_face(image, (90, 40, 110, 60), config)
    assert crop.shape == (40, 40, 3)
    assert crop[12:28, 12:28].mean() > 250 and crop[:8].mean() < 5
    # a box at the border is padded, not shifted: the face stays centred
    image2 = np.zeros((100, 200, 3), np.uint8)
    image2[0:20, 0:20] = 255
    crop2 = crop_face(image2, (0, 0, 20, 20), FacesConfig(margin=1.0, size=40))
    assert crop2.shape == (40, 40, 3)
    assert crop2[18:22, 18:22].mean() > 250
    # non-square keeps the aspect ratio within `size`
    crop3 = crop_face(image, (90, 40, 110, 80), FacesConfig(margin=0.0, square=False, size=40))
    assert crop3.shape == (40, 20, 3)


def test_selector_modes_and_tracks():
    big = Face((0, 0, 50, 50), 0.91, "d")
    sure = Face((100, 100, 120, 120), 0.99, "d")
    assert FaceSelector("largest")([big, sure]) == [big]
    assert FaceSelector("confident")([big, sure]) == [sure]
    select_all = FaceSelector("all")
    first = select_all([Face((0, 0, 50, 50), 0.9, "d"), Face((100, 100, 150, 150), 0.9, "d")])
    second = select_all([Face((102, 101, 152, 151), 0.9, "d"), Face((2, 1, 52, 51), 0.9, "d")])
    assert [f.track for f in first] == [0, 1]
    assert {(f.box[0] < 60, f.track) for f in second} == {(True, 0), (False, 1)}
    third = select_all([Face((300, 300, 340, 340), 0.9, "d")])
    assert third[0].track == 2
