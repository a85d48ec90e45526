"""DX-LLaVA explanations written from, and measured against, the evidence of each image.

`answer_text` turns an image's measured evidence (`fakefinder.faces.cues`) into the answer
make-data trains on: for a fake with a true mask, the regions it changed (at least half of a
region's pixels) and partly changed (a quarter), how much of the face changed and what its edge
looks like; for a fake without one, that no region can be named; for a real, what was checked and
found clean. Every answer also says which way the face turns, how sharp it is and how it is lit,
and ends with `### Answer: real|fake`. The same evidence always gives the same words.

`named_regions` reads the regions an answer claims back with the same vocabulary (the
`Changed regions:` clause only: regions a real's answer lists as checked are not claims), and the
scoring functions compare those claims with the true mask's regions.
"""

from __future__ import annotations

import itertools
import re

import numpy as np

from fakefinder.faces.cues import FACE_REGIONS

WORDS = {
    "forehead": "forehead",
    "brows": "eyebrows",
    "eyes": "eyes",
    "nose": "nose",
    "cheeks": "cheeks",
    "mouth": "mouth",
    "chin_jaw": "lower jaw",
    "boundary": "face outline",
}
PATTERNS = {
    "forehead": r"\bforehead\b",
    "brows": r"\b(?:eye)?brows?\b",
    "eyes": r"\beyes?\b",
    "nose": r"\bnose\b",
    "cheeks": r"\bcheeks?\b",
    "mouth": r"\b(?:mouth|lips?)\b",
    "chin_jaw": r"\b(?:chin|jaw|jawline)\b",
    "boundary": r"\b(?:face outline|outline|boundary)\b",
}
CLAIM = re.compile(r"(?<!partly )\bchanged regions?\s*:\s*([^.\n]*)", re.IGNORECASE)
PARTLY = re.compile(r"\bpartly changed\s*:\s*([^.\n]*)", re.IGNORECASE)
CENTRAL = ("eyes", "nose", "mouth")  # the middle of the face: where a face prior peaks
EDGE_WORDS = {
    "visible seam": "a visible seam",
    "smooth blend": "a smooth blend",
    "faint edge": "a faint edge",
    "clear colour shift": "a clear colour shift",
    "slight colour shift": "a slight colour shift",
    "matching colour": "matching colour",
    "smoother inside": "smoother skin inside",
    "sharper inside": "sharper detail inside",
    "matching texture": "matching texture",
}


def _listed(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _scene(scene: dict) -> str:
    if not scene:
        return ""
    return (
        f" The face is {scene['pose']} and {scene['sharpness']}; the light is {scene['exposure']} and "
        f"{scene['light']}."
    )


def answer_text(label: int, evidence: dict | None) -> str:
    """The grounded answer for one image: `label` 0 real / 1 fake, `evidence` its measurements
    (`Evidence.as_dict()`; for a fake without a true mask `face_changed` is None)."""
    evidence = evidence or {}
    scene = _scene(evidence.get("scene", {}))
    if label == 0:
        located = (
            "located by the face mesh"
            if evidence.get("regions_from", "face_mesh") == "face_mesh"
            else "placed by a standard layout, as the face mesh found no face"
        )
        return (
            f"Authentic: the eyebrows, eyes, nose, mouth and face outline ({located}) show no blending "
            f"edge, colour shift or texture change.{scene}\n### Answer: real"
        )
    if evidence.get("face_changed") is None:
        return (
            f"Manipulated, but where is not known for this image, so no region is named.{scene}"
            "\n### Answer: fake"
        )
    share = 100 * float(evidence["face_changed"])
    amount = "under 5 %" if share < 2.5 else f"about {int(5 * round(share / 5))} %"
    changed = [WORDS[r] for r in evidence.get("changed", []) if r in WORDS]
    partly = [WORDS[r] for r in evidence.get("partly", []) if r in WORDS]
    parts = [f"Manipulated: {amount} of the face was changed."]
    parts.append(
        f"Changed regions: {_listed(changed)}." if changed else "Changed regions: none by half or more."
    )
    if partly:
        parts.append(f"Partly changed: {_listed(partly)}.")
    edge = evidence.get("edge") or {}
    if edge:
        words = [EDGE_WORDS[edge[k]] for k in ("seam", "colour", "texture")]
        parts.append(f"At the edge of the change: {_listed(words)}.")
    return " ".join(parts) + f"{scene}\n### Answer: fake"


def _regions_in(clause: str) -> list[str]:
    clause = clause.lower()
    return [r for r, pattern in PATTERNS.items() if re.search(pattern, clause)]


def named_regions(text: str) -> list[str]:
    """The regions an answer claims were changed (its `Changed regions:` clauses), in `FACE_REGIONS`
    order; [] when it claims none (a real's answer, a fake's without a mask, "none by half")."""
    found = {r for clause in CLAIM.findall(text or "") for r in _regions_in(clause)}
    return [r for r in FACE_REGIONS if r in found]


def partly_named(text: str) -> list[str]:
    """The regions an answer says were partly changed."""
    found = {r for clause in PARTLY.findall(text or "") for r in _regions_in(clause)}
    return [r for r in FACE_REGIONS if r in found]


def naming_scores(named: list[set], truth: list[set]) -> dict:
    """Precision, recall and F1 of the named regions against the true ones, pooled over all samples
    (micro), and the mean per-sample F1 (a sample naming nothing where nothing changed scores 1)."""
    tp = sum(len(n & t) for n, t in zip(named, truth))
    fp = sum(len(n - t) for n, t in zip(named, truth))
    fn = sum(len(t - n) for n, t in zip(named, truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_sample = [
        1.0 if not n and not t else 2 * len(n & t) / (len(n) + len(t)) for n, t in zip(named, truth)
    ]
    return {
        "n": len(truth),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_sample_f1": float(np.mean(per_sample)) if per_sample else None,
    }


def constant_scores(regions, truth: list[set]) -> dict:
    """`naming_scores` of an answer that always names `regions`."""
    return {"regions": list(regions), **naming_scores([set(regions)] * len(truth), truth)}


def best_constant(truth: list[set]) -> dict:
    """The one region set that, named for every sample, scores the highest pooled F1 on these samples:
    an oracle no fixed answer can beat (it is chosen on the very samples it is scored on)."""
    best = None
    for size in range(1, len(FACE_REGIONS) + 1):
        for regions in itertools.combinations(FACE_REGIONS, size):
            scores = constant_scores(regions, truth)
            if best is None or scores["f1"] > best["f1"]:
                best = scores
    return best or constant_scores((), truth)


def area_matched_regions(
    labels: np.ndarray, codes: dict[str, int], target: float, rng: np.random.Generator
) -> list[str]:
    """Facial regions drawn at random until their pixels reach `target` (a pixel count): the
    random control of a removal of named regions."""
    present = [r for r in FACE_REGIONS if (labels == codes[r]).any()]
    chosen, area = [], 0
    for index in rng.permutation(len(present)):
        if area >= target:
            break
        region = present[index]
        chosen.append(region)
        area += int((labels == codes[region]).sum())
    return chosen


def regions_pixels(labels: np.ndarray, codes: dict[str, int], regions) -> np.ndarray:
    """The boolean mask of the named regions' pixels."""
    return np.isin(labels, [codes[r] for r in regions])


def text_map_consistency(heatmap: np.ndarray, labels: np.ndarray, codes: dict[str, int], regions) -> dict:
    """How much of a heatmap's mass lies in the regions a text names, beside their share of the
    face's area (what a flat map would put there): `lift` above 1 means the map and the text agree."""
    import cv2

    values = np.clip(np.asarray(heatmap, np.float32), 0, None)
    if values.shape != labels.shape:
        values = cv2.resize(values, labels.shape[::-1], interpolation=cv2.INTER_LINEAR)
    face = labels != codes["background"]
    named = regions_pixels(labels, codes, regions)
    total = float(values[face].sum())
    mass = float(values[named].sum()) / total if total > 0 else 0.0
    area = float(named.sum()) / max(1, int(face.sum()))
    return {"mass": mass, "area": area, "lift": mass / area if area > 0 else None}
