"""One crop geometry whichever detector found the face: every detector's box is mapped into
MTCNN's convention (`faces.BOX_CONVENTION`) before the margin and the square are applied."""

import numpy as np
import pytest

from fakefinder.config import FacesConfig
from fakefinder.faces import detectors as faces_module
from fakefinder.faces.detectors import (
    BOX_CONVENTION,
    DETECTORS,
    FaceDetector,
    create_detector,
    crop_window,
    iou,
    to_convention,
)
from fakefinder.faces.extract import ExtractSettings, extract
from fakefinder.synthetic import frame_with_face

TRUE_BOX = (140.0, 60.0, 230.0, 170.0)  # the face, in the reference (MTCNN) convention
TIGHT = (0.02, -0.1, 0.9, 1.25)  # how the "tight" detector's boxes relate to the reference


def drawn_by(mapping, box):
    """The box a detector with this convention draws around a face whose reference box is `box`."""
    dx, dy, sw, sh = mapping
    w, h = (box[2] - box[0]) / sw, (box[3] - box[1]) / sh
    cx, cy = (box[0] + box[2]) / 2 - dx * w, (box[1] + box[3]) / 2 - dy * h
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


class _Flaky(FaceDetector):
    """Draws reference boxes, but only on every other call (a frame it misses)."""

    name = "flaky"
    calls = 0

    def _detect_batch(self, images, min_face_px):
        type(self).calls += 1
        return [[(TRUE_BOX, 0.99)] if self.calls % 2 else [] for _ in images]


class _Tight(FaceDetector):
    name = "tight"

    def _detect_batch(self, images, min_face_px):
        return [[(drawn_by(TIGHT, TRUE_BOX), 0.99)] for _ in images]


@pytest.fixture
def stub_detectors(monkeypatch):
    monkeypatch.setitem(DETECTORS, "flaky", _Flaky)
    monkeypatch.setitem(DETECTORS, "tight", _Tight)
    monkeypatch.setitem(BOX_CONVENTION, "tight", TIGHT)
    _Flaky.calls = 0


def test_the_mapping_moves_and_scales_boxes_as_documented():
    assert to_convention(TRUE_BOX, BOX_CONVENTION["mtcnn"]) == TRUE_BOX
    moved = to_convention((0, 0, 100, 200), (0.1, -0.05, 1.2, 0.5))
    assert moved == pytest.approx((0.0, 40.0, 120.0, 140.0))  # centre (60, 90), 120 x 100
    assert to_convention(drawn_by(TIGHT, TRUE_BOX), TIGHT) == pytest.approx(TRUE_BOX)


def test_same_crop_whichever_detector_fired(tmp_path, stub_detectors):
    from PIL import Image

    image = frame_with_face((240, 320), identity=0, t=0.2)
    frames = tmp_path / "frames"
    frames.mkdir()
    paths = [frames / f"f{i}.png" for i in range(4)]
    for path in paths:
        Image.fromarray(image).save(path)
    settings = ExtractSettings(
        FacesConfig(detector="flaky", fallback=["tight"], batch_size=1, detect_max_side=None),
        crop_format="png",
    )
    crops = [extract(path, settings, decode=True).crops[0] for path in paths]
    assert [c.face.detector for c in crops] == ["flaky", "tight", "flaky", "tight"]  # both fired
    config = settings.faces
    window = crop_window(crops[0].face.box, config)
    for crop in crops[1:]:
        assert crop.face.box == pytest.approx(crops[0].face.box)
        assert crop_window(crop.face.box, config) == window
        np.testing.assert_array_equal(crop.pixels, crops[0].pixels)
    # without the mapping the fallback's crop would be framed differently
    raw = _Tight().detect([image], raw=True)[0][0].box
    assert iou(crop_window(raw, config), crop_window(TRUE_BOX, config)) < 0.85


@pytest.mark.parametrize("name", ["retinaface", "mediapipe", "mediapipe_short", "opencv"])
def test_shipped_detectors_frame_a_real_face_like_mtcnn(name):
    from skimage import data

    image = data.astronaut()  # a real face photo (512 x 512)
    config = FacesConfig()
    reference = max(create_detector("mtcnn", min_score=0.5).detect([image])[0], key=lambda f: f.area)
    found = max(create_detector(name, min_score=0.5).detect([image])[0], key=lambda f: f.area)
    assert iou(crop_window(found.box, config), crop_window(reference.box, config)) >= 0.7, name


def test_a_registered_detector_brings_its_convention(monkeypatch):
    monkeypatch.setattr(faces_module, "DETECTORS", dict(DETECTORS))
    monkeypatch.setattr(faces_module, "BOX_CONVENTION", dict(BOX_CONVENTION))
    faces_module.register_detector("tight", _Tight, box_convention=TIGHT)
    face = create_detector("tight").detect([np.zeros((240, 320, 3), np.uint8)])[0][0]
    assert face.box == pytest.approx(TRUE_BOX)


def test_models_trained_before_the_mapping_keep_their_framing(stub_detectors):
    from fakefinder.engine.predict import face_settings
    from fakefinder.faces.detectors import DetectorChain

    old = {
        "faces": {"detector": "tight", "fallback": [], "detect_max_side": None}
    }  # saved without box_convention
    faces, _ = face_settings(old, {})
    assert faces.box_convention == "detector"
    image = np.zeros((240, 320, 3), np.uint8)
    assert DetectorChain(faces).detect([image])[0][0].box == pytest.approx(drawn_by(TIGHT, TRUE_BOX))
    new, _ = face_settings({"faces": {**old["faces"], "box_convention": "mtcnn"}}, {})
    assert DetectorChain(new).detect([image])[0][0].box == pytest.approx(TRUE_BOX)
