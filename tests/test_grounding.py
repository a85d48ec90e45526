"""DX-LLaVA explanations grounded in each image's evidence: make-data writes region claims that match
each fake's true mask (and none for reals or fakes without a mask), the region parser reads
make-data's sentences back, and the explanation metrics score constructed answers as they should."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakefinder.faces.cues import CHANGED, FACE_REGIONS, PARTLY, coverage, edge_cues, measure
from fakefinder.faces.regions import _canonical
from fakefinder.tasks.dx_llava import grounding as g
from fakefinder.tasks.dx_llava.data import make_data, read_samples

SIDE = 96
MOUTH = (slice(62, 77), slice(30, 66))  # the canonical layout's mouth at 96 px, and a margin
EYES = (slice(40, 48), np.r_[22:40, 56:74])  # both eyes, not the nose between them


def painted_manifest(root) -> tuple:
    """Two reals (noise: the face mesh finds no face, so the canonical layout holds), a fake of each
    painted on its mouth or its eyes (its source recorded), and a fake with no source at all."""
    rng = np.random.default_rng(0)
    rows, crops = [], {}

    def add(name, pixels, label, group, source=""):
        Image.fromarray(pixels).save(root / f"{name}.png")
        crops[name] = pixels
        rows.append(
            {
                "path": f"{name}.png",
                "label": label,
                "split": "test",
                "dataset": "d",
                "group": group,
                "video_id": name,
                "frame_index": 0,
                "face_index": 0,
                "source_video_id": source,
            }
        )

    for i, where in enumerate((MOUTH, EYES)):
        real = np.clip(rng.normal(120, 20, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
        fake = real.copy()
        fake[where] = (230, 40, 40)
        add(f"real{i}", real, "real", f"g{i}")
        add(f"fake{i}", fake, "fake", f"g{i}", f"real{i}")
    lone = np.clip(rng.normal(120, 20, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
    add("lone", lone, "fake", "g9")
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv", crops


@pytest.fixture(scope="module")
def grounded(tmp_path_factory):
    root = tmp_path_factory.mktemp("painted")
    manifest, crops = painted_manifest(root)
    written = make_data(manifest, root / "llava")
    items = {item["id"]: item for item in json.loads(written["test"].read_text())}
    return {"root": root, "json": written["test"], "items": items, "crops": crops}


def _answer(item) -> str:
    return item["conversations"][-1]["value"]


def test_make_data_claims_the_regions_of_each_fakes_own_mask(grounded):
    items = grounded["items"]
    mouth, eyes = items["fake0"], items["fake1"]
    assert g.named_regions(_answer(mouth)) == ["mouth"] == mouth["evidence"]["changed"]
    assert g.named_regions(_answer(eyes)) == ["eyes"] == eyes["evidence"]["changed"]
    assert _answer(mouth) != _answer(eyes)
    for item in (mouth, eyes):
        assert item["evidence"]["origin"] == "source_difference"
        assert (grounded["json"].parent / item["evidence"]["mask"]).is_file()
        assert item["evidence"]["source"] == item["id"].replace("fake", "real") + ".png"
        assert 0 < item["evidence"]["face_changed"] < 0.3
        assert _answer(item).endswith("### Answer: fake")
    # the painted patch is a hard red edge: the edge cues say so
    assert eyes["evidence"]["edge"]["colour"] == "clear colour shift"


def test_make_data_claims_nothing_for_a_real_or_a_fake_without_a_mask(grounded):
    items = grounded["items"]
    for real in ("real0", "real1"):
        text = _answer(items[real])
        assert g.named_regions(text) == [] and g.partly_named(text) == []
        assert "eyes" in text  # it says what was checked, and that is no claim
        assert text.endswith("### Answer: real") and items[real]["evidence"]["origin"] == "real"
    lone = items["lone"]
    assert g.named_regions(_answer(lone)) == [] and "no region is named" in _answer(lone)
    assert lone["evidence"]["face_changed"] is None and "mask" not in lone["evidence"]
    samples, report = read_samples(grounded["json"], grounded["root"])
    assert report["fake"] == 3 and all(s.evidence for s in samples)


def test_answers_vary_with_the_evidence_and_only_with_it(grounded):
    items = grounded["items"]
    for item in items.values():
        again = g.answer_text(item["binary_label"], item["evidence"])
        assert again == _answer(item)
    scene = items["real0"]["evidence"]["scene"]
    other = "dim" if scene["exposure"] != "dim" else "bright"
    changed = {**items["real0"]["evidence"], "scene": {**scene, "exposure": other}}
    assert g.answer_text(0, changed) != _answer(items["real0"]) and other in g.answer_text(0, changed)


def test_the_region_parser_reads_back_every_claim_make_data_can_write():
    rng = np.random.default_rng(0)
    scene = {"pose": "facing the camera", "sharpness": "soft", "exposure": "dim", "light": "even"}
    edge = {"seam": "faint edge", "colour": "matching colour", "texture": "matching texture"}
    sets = [s for n in range(0, 4) for s in itertools.combinations(FACE_REGIONS, n)]
    for changed in sets:
        rest = [r for r in FACE_REGIONS if r not in changed]
        partly = sorted(rng.choice(rest, size=min(2, len(rest)), replace=False), key=FACE_REGIONS.index)
        evidence = {
            "scene": scene,
            "edge": edge,
            "face_changed": 0.3,
            "changed": list(changed),
            "partly": list(partly),
        }
        text = g.answer_text(1, evidence)
        assert g.named_regions(text) == list(changed), text
        assert g.partly_named(text) == list(partly), text
    assert g.named_regions("Changed regions: the lips and the jawline.") == ["mouth", "chin_jaw"]
    assert g.named_regions("The eyebrows look fine.") == []  # no claim clause, no claim


def test_coverage_and_edge_cues_measure_what_was_painted():
    labels = _canonical((SIDE, SIDE))
    mask = np.zeros((SIDE, SIDE), bool)
    mask[MOUTH] = True
    shares = coverage(mask, labels)
    assert shares["mouth"] >= CHANGED and all(shares[r] < PARTLY for r in shares if r != "mouth")
    flat = np.full((SIDE, SIDE, 3), 120, np.uint8)
    assert edge_cues(flat, mask)["colour"] == "matching colour"
    painted = flat.copy()
    painted[mask] = (200, 60, 60)
    cues = edge_cues(painted, mask)
    assert cues["colour"] == "clear colour shift" and cues["seam"] == "visible seam"
    evidence = measure(painted, mask)
    assert evidence.changed == ["mouth"] and evidence.regions_from == "canonical"


def test_naming_scores_on_answers_whose_score_is_known():
    truth = [{"eyes", "nose", "mouth"}, {"mouth"}, {"eyes"}]
    exact = g.naming_scores([set(t) for t in truth], truth)
    assert exact["precision"] == exact["recall"] == exact["f1"] == exact["mean_sample_f1"] == 1.0
    central = g.constant_scores(g.CENTRAL, truth)
    # 5 true regions, all named; 9 named, 5 right
    assert central["recall"] == 1.0 and central["precision"] == pytest.approx(5 / 9)
    assert central["f1"] == pytest.approx(2 * (5 / 9) / (1 + 5 / 9))
    assert central["regions"] == ["eyes", "nose", "mouth"]
    best = g.best_constant(truth)
    assert best["f1"] >= central["f1"] and best["f1"] < 1.0
    none = g.naming_scores([set()] * 3, truth)
    assert none["f1"] == 0.0 and none["recall"] == 0.0


class PatchDetector:
    """A stand-in explainer whose fake probability is how red the image is, and whose heatmap is the
    redness itself: removing the painted patch (restoring the source) drops it, other regions don't."""

    heatmap_method = "cam"

    def head_probabilities(self, images, question=None, batch_size=8):
        return np.array([float(self._red(np.asarray(i)).mean()) * 4 for i in images])

    def heatmaps(self, images, question=None):
        return [self._red(np.asarray(i)) for i in images]

    @staticmethod
    def _red(image):
        image = image.astype(np.float32)
        return np.clip((image[..., 0] - image[..., 1]) / 255, 0, 1)


def test_grounding_metrics_of_answers_that_are_exactly_the_evidence(grounded):
    from fakefinder.tasks.dx_llava.evaluate import grounding, text_variety

    samples, _ = read_samples(grounded["json"], grounded["root"])
    explainer = PatchDetector()
    probabilities = explainer.head_probabilities([grounded["crops"][s.id] for s in samples])
    explained = [
        {
            "probability": float(p),
            "explanation": s.turns[-1][1],
            "text_label": s.binary_label,
            "named_regions": g.named_regions(s.turns[-1][1]),
        }
        for s, p in zip(samples, probabilities)
    ]
    out = grounding(explainer, samples, explained, grounded["json"].parent, grounded["root"], "?")
    regions = out["regions"]
    assert regions["text"]["f1"] == 1.0 and regions["text"]["n"] == 2
    assert regions["central_baseline"]["precision"] == pytest.approx(2 / 6)
    assert regions["claims_on_reals"] == 0.0 and regions["claims_on_unmasked_fakes"] == 0.0
    assert out["text_map"]["n"] == 2 and out["text_map"]["mean_lift"] > 2
    assert out["text_map"]["map_pointing"] == 1.0
    deletion = out["deletion"]
    assert deletion["n"] == 2 and deletion["named_beats_random"] == 1.0
    assert deletion["named_drop"] > deletion["random_drop"] + 0.05
    agreement = out["agreement"]
    # the painted fakes score above both reals; the unpainted fake ("lone") shows nothing to see
    assert agreement["n"] == len(samples) and agreement["text_vs_probability_auc"] == pytest.approx(4 / 6)
    variety = text_variety(["Fake. The mouth.", "Fake.  The\nmouth.", "Real.", "Fake. The eyes."])
    assert variety["distinct"] == 3 and variety["most_common_share"] == 0.5
    assert variety["most_common"] == "Fake. The mouth."


def test_the_measured_line_states_what_a_map_marks_and_its_threshold_is_fitted(grounded):
    """A faint map over the painted mouth reads as the mouth, an empty map as no region, each with the
    image's own scene; fitting the threshold on true regions keeps the cuts that find them."""
    from types import SimpleNamespace

    from fakefinder.tasks.dx_llava.measured import Measurer, fit_threshold, measured_note

    stub = SimpleNamespace(vision_tower=SimpleNamespace(mask_head=object()))
    measurer = Measurer(stub, SIDE, (0.5,) * 3, (0.5,) * 3, "pad", threshold=0.3)
    crops, items = grounded["crops"], grounded["items"]
    mouth_map, eyes_map = np.zeros((SIDE, SIDE), np.float32), np.zeros((SIDE, SIDE), np.float32)
    mouth_map[MOUTH], eyes_map[EYES] = 0.35, 0.35
    evidence = measurer.evidence(crops["fake0"], mouth_map)
    note = measured_note(evidence)
    assert evidence["changed"] == ["mouth"] and "most of the mouth" in note and note.startswith("Measured:")
    assert "colour shift" in note  # the painted red edge, measured on the map's area
    assert g.named_regions(note) == []  # the question's line is not a claim of the answer
    blank = measured_note(measurer.evidence(crops["fake0"], np.zeros_like(mouth_map)))
    assert "marks no facial region" in blank and items["fake0"]["evidence"]["scene"]["pose"] in blank
    fitted = fit_threshold(
        measurer, [crops["fake0"], crops["fake1"]], [mouth_map, eyes_map], [{"mouth"}, {"eyes"}]
    )
    assert fitted["f1"]["0.3"] == 1.0 and fitted["f1"]["0.4"] == 0.0 and fitted["threshold"] == 0.3
    # the measured line's regions read back, and scored in evaluate beside the text's
    from fakefinder.tasks.dx_llava.evaluate import _region_naming
    from fakefinder.tasks.dx_llava.measured import measured_regions

    both = measured_note(measurer.evidence(crops["fake0"], np.maximum(mouth_map, eyes_map)))
    assert measured_regions(note) == ["mouth"] and measured_regions(both) == ["eyes", "mouth"]
    assert measured_regions(blank) == []
    samples, _ = read_samples(grounded["json"], grounded["root"])
    masked = [i for i, s in enumerate(samples) if s.evidence.get("face_changed") is not None]
    lines = {"fake0": note, "fake1": both}  # the eyes' line also marks the mouth: one wrong region
    explained = [
        {"named_regions": list(s.evidence.get("changed") or []), "measured": lines.get(s.id, blank)}
        for s in samples
    ]
    regions = _region_naming(samples, explained, masked)
    assert regions["text"]["f1"] == 1.0 and regions["measured_line"]["recall"] == 1.0
    assert regions["measured_line"]["precision"] == pytest.approx(2 / 3)
    assert regions["text_vs_measured_line"]["precision"] == 1.0
    assert fitted["fitted_on"] == 2 and measurer.threshold == 0.3
    with pytest.raises(Exception, match="measured_prompt"):
        Measurer(SimpleNamespace(vision_tower=SimpleNamespace()), SIDE, (0.5,) * 3, (0.5,) * 3, "pad")
