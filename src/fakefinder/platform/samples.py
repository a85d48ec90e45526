"""Tiny datasets for trying the platform (`fakefinder serve --demo-data`): face crops for a
detector, class folders for a classifier, LLaVA conversations (and a tiny tokenizer) for DX-LLaVA,
instruction JSONL (and the same tokenizer) for the language-model kinds, a YOLO dataset of shapes
for the object detector, captioned images for a text-to-image LoRA."""

from __future__ import annotations

from pathlib import Path

from fakefinder import synthetic

DEMO_DATASETS = ("faces", "classes", "dx", "instructions", "shapes", "captions")


def write_demo_datasets(root: Path) -> dict[str, Path]:
    """Each demo dataset into `root/<name>` (one that is there already is kept)."""
    root = Path(root)
    written = {}
    for name in DEMO_DATASETS:
        folder = root / name
        if not folder.exists():
            staging = root / f".demo-{name}"
            _write(name, staging)
            staging.rename(folder)
        written[name] = folder
    return written


def _write(name: str, folder: Path) -> None:
    if name == "faces":
        synthetic.make_prepared_crops(folder, groups=10, size=48)
    elif name == "classes":
        synthetic.make_class_folders(folder, per_split=(("train", 8), ("val", 4), ("test", 4)))
    elif name == "dx":
        from fakefinder.engine.tiny import build_char_tokenizer

        synthetic.make_llava_set(folder, count=12, splits=("train", "val", "test"))
        build_char_tokenizer(folder / "tokenizer")
    elif name == "shapes":
        synthetic.make_yolo_dataset(folder, {"train": 24, "val": 8}, size=64, background_every=8)
    elif name == "captions":
        synthetic.make_captioned_folder(folder, count=12, size=48)
    else:
        from fakefinder.engine.tiny import build_char_tokenizer

        synthetic.make_instruction_set(folder, {"train": 24, "val": 6, "test": 6})
        build_char_tokenizer(folder / "tokenizer")
