"""What a DX-LLaVA with `dx_llava.model.measured_prompt` reads before it answers: the evidence measured
on the image itself, written into the question as one line.

The tower's mask head (a `fakefinder:` detector trained with a mask head) draws where the image was
changed; the map, cut at a threshold, is measured exactly as make-data measures a true mask
(`fakefinder.faces.cues.measure`: the facial regions it covers, how much of the face, what its edge
looks like), together with the scene cues of every face (pose, sharpness, light). The answers the
model learns from are still written from the true evidence, so the language model learns to state
what was measured and, where the two differ, to follow the image.

The threshold is fitted when the model is trained: the one whose regions best match the true masks'
(region F1) on the evaluation split, among `THRESHOLDS`; `DEFAULT_THRESHOLD` where that split holds
no true mask. Training and inference call the same functions here, so the line a model reads at
inference is written as the lines it was trained on.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fakefinder.config import ConfigError

THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
DEFAULT_THRESHOLD = 0.3  # the localiser check's IoU cut, for a map nobody could fit a threshold on
PREFIX = "Measured:"


def as_array(image) -> np.ndarray:
    """An RGB uint8 array from a path (EXIF orientation applied) or an array."""
    from fakefinder.media.images import read_image

    return image if isinstance(image, np.ndarray) else read_image(Path(image))


def unpadded(heatmap: np.ndarray, shape: tuple[int, int], aspect: str) -> np.ndarray:
    """A map of the square (padded) input cut back to the image and resized to its `shape`."""
    import cv2

    height, width = shape
    if aspect == "pad" and height != width:
        side = heatmap.shape[0]
        scale = side / max(height, width)
        h, w = round(height * scale), round(width * scale)
        top, left = (side - h) // 2, (side - w) // 2
        heatmap = heatmap[top : top + h, left : left + w]
    return cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR)


def check_tower(tower, key: str = "dx_llava.model.measured_prompt") -> None:
    if getattr(tower, "mask_head", None) is None:
        raise ConfigError(
            f"{key}: the vision tower has no mask head to measure the image with; use a "
            "fakefinder:<detector> tower whose detector was trained with a mask head"
        )


def mask_maps(tower, pixel_values: torch.Tensor, images: list[np.ndarray], aspect: str) -> list[np.ndarray]:
    """The tower's mask-head map of each normalised image in [0, 1] at the image's own size (padding
    cut away), blurred as the detector's localiser check chose."""
    import torch.nn.functional as F

    from fakefinder.tasks.classification.heatmaps import smoothed

    with torch.no_grad():
        dtype = next(tower.parameters()).dtype
        raw = torch.sigmoid(tower.mask(pixel_values.to(dtype)).float())
    side = pixel_values.shape[-1]
    up = F.interpolate(raw, size=(side, side), mode="bilinear", align_corners=False)
    maps = smoothed([m.cpu().numpy() for m in up[:, 0]], tower.mask_spec.get("smooth", 0.0))
    return [np.clip(unpadded(m, image.shape[:2], aspect), 0, 1) for m, image in zip(maps, images)]


class Measurer:
    """Measures images with a model's tower: `maps` then `evidence` (or `notes` for both)."""

    def __init__(self, model, image_size: int, mean, std, aspect: str, threshold: float | None = None):
        check_tower(model.vision_tower)
        self.model, self.aspect, self.threshold = model, aspect, threshold
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)

    def maps(self, images: list, batch_size: int = 16) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(RGB arrays, mask-head maps) of paths or arrays."""
        from fakefinder.tasks.dx_llava.data import load_image

        arrays, maps = [], []
        device = next(self.model.vision_tower.parameters()).device
        for start in range(0, len(images), batch_size):
            chunk = [as_array(image) for image in images[start : start + batch_size]]
            pixels = torch.stack(
                [load_image(a, self.image_size, self.mean, self.std, self.aspect) for a in chunk]
            ).to(device)
            arrays += chunk
            maps += mask_maps(self.model.vision_tower, pixels, chunk, self.aspect)
        return arrays, maps

    def evidence(self, image: np.ndarray, heatmap: np.ndarray, labels=None) -> dict:
        """`faces.cues.measure` of the image with the map cut at the threshold as its mask."""
        from fakefinder.faces.cues import measure

        threshold = DEFAULT_THRESHOLD if self.threshold is None else self.threshold
        return measure(image, heatmap >= threshold, labels).as_dict()

    def notes(self, images: list, chunk: int = 64) -> list[str]:
        out = []
        for start in range(0, len(images), chunk):
            arrays, maps = self.maps(images[start : start + chunk])
            out += [measured_note(self.evidence(a, m)) for a, m in zip(arrays, maps)]
        return out


def measured_note(evidence: dict) -> str:
    """The line a measured prompt adds: what the map marks, in make-data's words, and the scene."""
    from fakefinder.tasks.dx_llava.grounding import EDGE_WORDS, WORDS, _listed, _scene

    changed = [WORDS[r] for r in evidence.get("changed", []) if r in WORDS]
    partly = [WORDS[r] for r in evidence.get("partly", []) if r in WORDS]
    share = 100 * float(evidence.get("face_changed") or 0.0)
    if not changed and not partly:
        marked = "the detector's map marks no facial region."
    else:
        marked = f"the detector's map marks about {int(5 * round(share / 5))} % of the face"
        marked += f": most of the {_listed(changed)}" if changed else ""
        marked += (f"{';' if changed else ':'} part of the {_listed(partly)}") if partly else ""
        edge = evidence.get("edge") or {}
        if edge:
            marked += "; at its edge " + _listed([EDGE_WORDS[edge[k]] for k in ("seam", "colour", "texture")])
        marked += "."
    return f"{PREFIX} {marked}{_scene(evidence.get('scene', {}))}"


MARKED = re.compile(r"most of the ([^;.]*)")


def measured_regions(note: str) -> list[str]:
    """The regions a measured line says the map marks by half or more (`measured_note`'s words)."""
    from fakefinder.faces.cues import FACE_REGIONS
    from fakefinder.tasks.dx_llava.grounding import _regions_in

    found = {r for clause in MARKED.findall(note or "") for r in _regions_in(clause)}
    return [r for r in FACE_REGIONS if r in found]


def with_note(question: str, note: str) -> str:
    return f"{question}\n{note}"


def fit_threshold(measurer: Measurer, arrays, maps, truths: list[set]) -> dict:
    """The threshold (of `THRESHOLDS`) whose changed regions best match `truths` (region F1), with the
    F1 of each; the default when there is nothing to fit on."""
    from fakefinder.faces.regions import region_map
    from fakefinder.tasks.dx_llava.grounding import naming_scores

    if not truths:
        return {"threshold": DEFAULT_THRESHOLD, "fitted_on": 0, "f1": {}}
    labels = [region_map(a) for a in arrays]
    scores = {}
    for threshold in THRESHOLDS:
        measurer.threshold = threshold
        named = [set(measurer.evidence(a, m, lab)["changed"]) for a, m, lab in zip(arrays, maps, labels)]
        scores[threshold] = round(naming_scores(named, truths)["f1"], 4)
    best = max(THRESHOLDS, key=lambda t: (scores[t], -abs(t - DEFAULT_THRESHOLD)))
    measurer.threshold = best
    return {"threshold": best, "fitted_on": len(truths), "f1": {str(k): v for k, v in scores.items()}}


def _has_true_mask(sample) -> bool:
    evidence = sample.evidence or {}
    return sample.binary_label == 1 and evidence.get("face_changed") is not None


def measure_samples(
    model, info: dict, aspect: str, train_samples: list, eval_samples: list, fit_samples: list, events=None
):
    """Train and eval samples with the measured line added to their first question; the threshold is
    fitted on the true masks of `fit_samples` (the evaluation file's) and written into
    `info["measured"]` (saved with the model)."""
    measurer = Measurer(model, info["image_size"], info["mean"], info["std"], aspect)
    fit_on = [s for s in fit_samples if _has_true_mask(s)]
    arrays, maps = measurer.maps([s.image for s in fit_on])
    fitted = fit_threshold(measurer, arrays, maps, [set(s.evidence.get("changed", [])) for s in fit_on])
    info["measured"] = fitted
    if events is not None:
        where = f"fitted on {fitted['fitted_on']} eval fakes with a true mask" if fit_on else "default"
        events.log(f"measured prompt: the map cut at {fitted['threshold']} ({where})", "train")

    def noted(samples: list) -> list:
        notes = measurer.notes([s.image for s in samples])
        out = []
        for sample, note in zip(samples, notes):
            (human, answer), *rest = sample.turns
            out.append(replace(sample, turns=[(with_note(human, note), answer), *rest]))
        return out

    return noted(train_samples), noted(eval_samples)
