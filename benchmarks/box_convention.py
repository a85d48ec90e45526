"""Calibrate how each face detector's boxes relate to MTCNN's, the one box convention crops use.

Every detector draws its own kind of box around the same face (MediaPipe's is brow to chin,
OpenCV's Haar box is wider, RetinaFace's a little smaller than MTCNN's). `fakefinder` maps every
detector's box into MTCNN's convention (`faces.BOX_CONVENTION`) before the margin and the square
are applied, so a model sees the same framing whichever detector fired. This script measures
that mapping on real faces and checks it on held-out ones:

    .venv/bin/python benchmarks/box_convention.py            # ../shared/data/dfdc-faces, 300 + 300 crops
    .venv/bin/python benchmarks/box_convention.py --data DIR --fit 400 --check 400

Each 224 px crop is padded to 448 px (so the whole face and some context is in the frame) and
every detector runs on it at full resolution. On the `train` crops it fits, per detector, the
median offset of MTCNN's box centre from the detector's (in units of the detector's box) and the
median ratio of the sides; on the `val` crops it reports the IoU of the mapped box with MTCNN's,
and of the final crop windows (margin and square applied), before and after the mapping.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import fakefinder  # noqa: F401  (the torchvision fix before facenet-pytorch)
from fakefinder.config import FacesConfig
from fakefinder.faces.detectors import BOX_CONVENTION, create_detector, crop_window, iou, to_convention

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "dfdc-faces"


def load(data: Path, split: str, count: int) -> list[np.ndarray]:
    with open(data / "metadata.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == split]
    rows = rows[:: max(1, len(rows) // count)][:count]
    images = []
    for row in rows:
        crop = np.asarray(Image.open(data / row["file"]).convert("RGB"))
        images.append(np.pad(crop, ((112, 112), (112, 112), (0, 0)), mode="edge"))
    return images


def largest(detector, image) -> tuple | None:
    found = detector.detect([image], raw=True)[0]
    return max(found, key=lambda f: f.area).box if found else None


def fit(pairs: list[tuple[tuple, tuple]]) -> tuple[float, float, float, float]:
    """(dx, dy, sw, sh): reference centre = centre + (dx * w, dy * h); reference side = side * s."""
    values = []
    for box, ref in pairs:
        w, h = box[2] - box[0], box[3] - box[1]
        rw, rh = ref[2] - ref[0], ref[3] - ref[1]
        values.append(
            (
                ((ref[0] + ref[2]) - (box[0] + box[2])) / 2 / w,
                ((ref[1] + ref[3]) - (box[1] + box[3])) / 2 / h,
                rw / w,
                rh / h,
            )
        )
    return tuple(round(float(v), 3) for v in np.median(np.asarray(values), axis=0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--fit", type=int, default=300, help="train crops to fit on")
    parser.add_argument("--check", type=int, default=300, help="val crops to check on")
    parser.add_argument("--detectors", default="retinaface,mediapipe,mediapipe_short,opencv")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "box_convention.json")
    args = parser.parse_args(argv)
    if not (args.data / "metadata.csv").is_file():
        raise SystemExit(f"no metadata.csv in {args.data} (give --data)")

    faces = FacesConfig()
    reference = create_detector("mtcnn", min_score=0.5)
    fit_images, check_images = load(args.data, "train", args.fit), load(args.data, "val", args.check)
    fit_ref = [largest(reference, im) for im in fit_images]
    check_ref = [largest(reference, im) for im in check_images]
    report = {
        "data": str(args.data),
        "fit_crops": len(fit_images),
        "check_crops": len(check_images),
        "detectors": {},
    }
    print(f"{len(fit_images)} train crops to fit, {len(check_images)} val crops to check; reference: MTCNN")
    print(
        f"{'detector':16}{'found':>7}{'fitted (dx, dy, sw, sh)':>30}{'in use':>30}"
        f"{'box IoU raw':>12}{'mapped':>8}{'crop IoU raw':>13}{'mapped':>8}"
    )
    for name in [n.strip() for n in args.detectors.split(",") if n.strip()]:
        detector = create_detector(name, min_score=0.5)
        pairs = [
            (b, r) for b, r in ((largest(detector, im), r) for im, r in zip(fit_images, fit_ref)) if b and r
        ]
        fitted = fit(pairs)
        in_use = BOX_CONVENTION.get(name, (0.0, 0.0, 1.0, 1.0))
        raw_box, mapped_box, raw_crop, mapped_crop = [], [], [], []
        for image, ref in zip(check_images, check_ref):
            box = largest(detector, image)
            if not box or not ref:
                continue
            mapped = to_convention(box, in_use)
            raw_box.append(iou(box, ref))
            mapped_box.append(iou(mapped, ref))
            ref_window = crop_window(ref, faces)
            raw_crop.append(iou(crop_window(box, faces), ref_window))
            mapped_crop.append(iou(crop_window(mapped, faces), ref_window))
        row = {
            "fit_pairs": len(pairs),
            "check_pairs": len(raw_box),
            "fitted": fitted,
            "in_use": in_use,
            "box_iou_raw": float(np.median(raw_box)),
            "box_iou_mapped": float(np.median(mapped_box)),
            "crop_iou_raw": float(np.median(raw_crop)),
            "crop_iou_mapped": float(np.median(mapped_crop)),
            "crop_iou_mapped_p10": float(np.percentile(mapped_crop, 10)),
        }
        report["detectors"][name] = row
        print(
            f"{name:16}{len(raw_box):>7} {str(fitted):>29} "
            f"{str(tuple(in_use)):>29}{row['box_iou_raw']:>12.3f}"
            f"{row['box_iou_mapped']:>8.3f}{row['crop_iou_raw']:>13.3f}{row['crop_iou_mapped']:>8.3f}"
        )
    print(
        "IoU columns: medians over the val crops where both found a face; crop = the square window "
        f"with margin {faces.margin} cut for the model"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
