"""The localisation and faithfulness figures on cases whose answers are known: a map equal to the mask
scores perfectly and beats the baselines, a random map scores about chance, the face prior scores as
the prior, and removing what a decision rests on lowers its score more than removing anything else."""

from __future__ import annotations

import numpy as np
import pytest

from fakefinder.engine.localisation import (
    deletion_drop,
    face_prior,
    iou_at,
    pixel_auc,
    pointing_game,
    random_map,
    remove,
    top_fraction,
)


def _mask(height=64, width=64, box=(46, 60, 4, 20)) -> np.ndarray:  # off centre: lower left
    mask = np.zeros((height, width), np.float32)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = 1
    return mask


def test_a_map_equal_to_the_mask_scores_perfectly():
    mask = _mask()
    assert pointing_game(mask, mask) == 1.0
    assert pixel_auc(mask, mask) == 1.0
    assert iou_at(mask, mask, 0.5) == 1.0
    blurred = mask + 0.1 * face_prior(64, 64)  # at another size, too: maps are resized to the mask
    assert pointing_game(blurred[::2, ::2], mask) == 1.0 and pixel_auc(blurred[::2, ::2], mask) > 0.95


def test_a_random_map_scores_about_chance():
    mask = _mask()
    aucs = [pixel_auc(random_map(64, 64, seed), mask) for seed in range(20)]
    assert abs(np.mean(aucs) - 0.5) < 0.03
    hits = [pointing_game(random_map(64, 64, seed), mask) for seed in range(400)]
    assert abs(np.mean(hits) - mask.mean()) < 0.06  # the mask's share of the crop


def test_the_prior_is_scored_as_the_prior():
    prior = face_prior(64, 64)
    assert prior[31:33, 31:33].min() == prior.max()  # centred
    centre = _mask(box=(24, 40, 24, 40))
    assert pointing_game(prior, centre) == 1.0 and pixel_auc(prior, centre) > 0.99  # a square, not a disc
    assert pointing_game(prior, _mask()) == 0.0 and pixel_auc(prior, _mask()) < 0.5  # off-centre change


def test_auc_is_undefined_without_both_classes_and_top_fraction_counts_pixels():
    assert pixel_auc(random_map(8, 8), np.zeros((8, 8))) is None
    assert pixel_auc(random_map(8, 8), np.ones((8, 8))) is None
    assert top_fraction(random_map(10, 10), 0.2).sum() == 20


def test_deletion_falls_most_for_the_map_that_points_at_the_evidence():
    rng = np.random.default_rng(0)
    source = rng.integers(90, 110, (64, 64, 3)).astype(np.float32)
    mask = _mask()
    fake = source.copy()
    fake[mask > 0] += 80  # the manipulation: a brighter patch

    def score(image):  # a "detector" whose fake probability is the patch's brightness above the source
        return float(np.clip((image - source).mean() / 10, 0, 1))

    honest = deletion_drop(score, fake, mask, 0.1, source=source)
    prior = deletion_drop(score, fake, face_prior(64, 64), 0.1, source=source)
    chance = np.mean(
        [deletion_drop(score, fake, random_map(64, 64, s), 0.1, source=source) for s in range(10)]
    )
    assert honest > prior and honest > chance and honest / max(chance, 1e-9) > 1
    assert prior == pytest.approx(0.0, abs=1e-6)  # the centre holds no change here
    filled = remove(fake, mask > 0, fill=(0, 0, 0))
    assert filled[mask > 0].max() == 0 and np.array_equal(filled[mask == 0], fake[mask == 0])


class RedNet:
    """A 'detector' whose fake logit is how red the image is: its decision rests on the painted patch."""

    def __call__(self, x):
        return 0.5 * (x[:, 0] - x[:, 1]).mean(dim=(1, 2)) - 2

    def __getattr__(self, name):  # MirrorAverage checks, eval mode: nothing else is asked
        raise AttributeError(name)


def pairs_manifest(root, corners=((8, 8), (8, 36), (36, 8), (36, 36), (20, 10), (12, 30))):
    """Real crops and, for each, a fake with a red 20x20 patch at `corners` (the fake's own source
    recorded), plus one fake cut from a shifted frame (misaligned: left out)."""
    import pandas as pd
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i, (y, x) in enumerate(corners):
        real = np.clip(rng.normal(120, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
        fake = real.copy()
        fake[y : y + 20, x : x + 20] = (230, 40, 40)
        for label, pixels in (("real", real), ("fake", fake)):
            Image.fromarray(pixels).save(root / f"{label}{i}.png")
            rows.append(
                {
                    "path": f"{label}{i}.png",
                    "label": label,
                    "split": "val",
                    "dataset": "d",
                    "group": f"g{i}",
                    "video_id": f"{label}{i}",
                    "frame_index": 0,
                    "face_index": 0,
                    "source_video_id": f"real{i}" if label == "fake" else "",
                }
            )
    shifted = np.roll(np.asarray(Image.open(root / "fake0.png")), 9, axis=1)
    Image.fromarray(shifted).save(root / "moved.png")
    rows.append({**rows[1], "path": "moved.png", "video_id": "moved"})
    return pd.DataFrame(rows)


def test_the_evaluation_figures_on_painted_fakes_whose_answer_is_known(tmp_path):
    import torch

    from fakefinder.core.artifact import Artifact
    from fakefinder.faces.truth import manifest_truths
    from fakefinder.tasks.classification.scoring import LoadedDetector
    from fakefinder.tasks.deepfake_detector.localiser import measure, summarise

    rows = pairs_manifest(tmp_path)
    prep = {"input_size": 64, "mean": [0.0] * 3, "std": [1 / 255] * 3}
    detector = LoadedDetector(
        RedNet(), Artifact(tmp_path, {"preprocessing": prep, "architecture": {}}), 0.5, []
    )
    truths = manifest_truths(rows, tmp_path, 64)

    def truth_maps(crops, indices):  # the map is the true mask itself
        return [truths[i].mask.astype(np.float32) for i in indices]

    with torch.no_grad():
        table, left_out = measure(detector, rows, tmp_path, {"map": truth_maps})
    assert left_out == {"misaligned with its source": 1} and len(table) == 6
    summary = summarise(table)["overall"]
    mine, prior, noise = summary["map"], summary["face_prior"], summary["random"]
    assert mine["pointing"] == 1.0 and mine["pixel_auc"] == pytest.approx(1.0) and mine["iou_0.5"] > 0.8
    # the prior is scored as the prior: its peak is the central 2x2 pixels, inside the patches covering
    # at least half of them
    masks = [truths[i].mask for i in sorted(truths) if truths[i].mask is not None]
    centre = [m[31:33, 31:33].mean() >= 0.5 for m in masks]
    assert prior["pointing"] == pytest.approx(np.mean(centre))
    assert abs(noise["pixel_auc"] - 0.5) < 0.1  # chance
    assert mine["drop_0.2"] > 0.5 and summary["ratios"]["drop_0.1_vs_face_prior"] > 1
    assert summary["ratios"]["drop_0.1_vs_random"] > 1
    bins = summarise(table)["by_area"]
    assert table.area.between(0.1, 0.25).all() and bins["10-25%"]["n"] == 6 and bins["<10%"]["n"] == 0


def test_a_refitted_mask_head_is_chosen_on_validation_when_it_localises_best(tmp_path):
    """Random features still see red: a head refitted on them finds painted patches that an untrained
    head and a CAM of an untrained network do not; the chosen artifact scores exactly as before."""
    import torch

    from fakefinder.core.artifact import write_artifact
    from fakefinder.media.images import load_rgb
    from fakefinder.tasks.classification.model import create
    from fakefinder.tasks.classification.scoring import crop_heatmaps, load_detector, score_pixels
    from fakefinder.tasks.deepfake_detector.refit import Choice, candidates, choose, drawers, save_choice

    rng = np.random.default_rng(1)
    corners = [tuple(int(v) for v in rng.integers(6, 38, 2)) for _ in range(18)]
    rows = pairs_manifest(tmp_path, corners).iloc[:-1]  # without the misaligned one
    rows = rows.assign(split=["train"] * 24 + ["val"] * 12)
    torch.manual_seed(0)
    network = create("test_efficientnet", pretrained=False, mask_head=True, mask_stride=8)
    arch = {"name": "test_efficientnet", "mask_head": True, "mask_stride": 8, "num_outputs": 1}
    prep = {"input_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3, "tta": "hflip"}
    write_artifact(
        tmp_path / "model", "deepfake_detector", arch, ["real", "fake"], prep, network.state_dict(), 0.5
    )
    detector = load_detector(tmp_path / "model")
    train, val = (rows[rows.split == s].reset_index(drop=True) for s in ("train", "val"))
    options = candidates(detector, train, tmp_path, strides=(8,))
    assert set(options) == {
        "cam",
        "as_trained",
        "refit_s8",
        "refit_s8_prior",
        "refit_s8_prior_mlp",
        "refit_s8_prior_sbi",
    }
    choice = choose(detector, options, val, tmp_path)
    assert choice.name.startswith("refit_s") and choice.fakes == 6  # the 6 val pairs
    chosen = choice.validation[f"{choice.name}~{choice.smooth:g}"]
    assert chosen["pixel_auc"] > 0.8 > choice.validation["as_trained~0"]["pixel_auc"]
    assert chosen["pointing"] > choice.validation["face_prior"]["pointing"]
    refitted = load_detector(save_choice(detector, choice, tmp_path / "refitted"))
    assert refitted.artifact.architecture["mask_stride"] == choice.stride
    crops = [load_rgb(tmp_path / p, 64) for p in val.path[:4]]
    np.testing.assert_allclose(score_pixels(refitted, crops), score_pixels(detector, crops), atol=1e-6)
    # heads that read the face prior too, linear or not, survive the round trip through an artifact
    for name in ("refit_s8_prior", "refit_s8_prior_mlp"):
        forced = Choice(name, options[name], 8, {}, 0)
        reloaded = load_detector(save_choice(detector, forced, tmp_path / name))
        assert reloaded.artifact.architecture["mask_prior"] is True
        assert reloaded.artifact.architecture.get("mask_hidden", 0) == (32 if name.endswith("mlp") else 0)
        expected = drawers(detector, {"x": options[name]})["x"](crops, None)
        for got, want in zip(crop_heatmaps(reloaded, crops), expected):
            np.testing.assert_allclose(got, want, atol=1e-5)
