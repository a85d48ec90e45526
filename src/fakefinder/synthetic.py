"""Synthetic but realistic test material: videos and images built from real face photos.

scikit-image ships a real colour portrait (`astronaut`); every "identity" here is that face under
a different colour, scale, flip and background, moving across the frame. A "fake" swaps the inner
face for a colour-shifted, re-blurred copy blended through a soft mask: a visible blending seam,
like a face swap. Used by the demo, the tests and the benchmarks; no download needed.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageFilter


@lru_cache(maxsize=1)
def _portrait() -> np.ndarray:
    from skimage import data

    # head and shoulders around the face of the astronaut photo (face box about x 180-270, y 60-175)
    return data.astronaut()[10:250, 130:330].copy()


# the face in `_portrait()` (x1, y1, x2, y2 as fractions of its 200 x 240 pixels), as MTCNN boxes
# it at 1-3x that size
PORTRAIT_FACE = (0.25, 0.215, 0.69, 0.685)


def _mirrored(identity: int) -> bool:
    return bool(identity % 2)


def identity_face(identity: int, fake: bool = False) -> np.ndarray:
    """A head-and-shoulders RGB image for `identity`; fakes carry a blended inner face."""
    rng = np.random.default_rng(identity)
    image = _portrait().astype(np.float32)
    gains = rng.uniform(0.8, 1.2, size=3)
    image = np.clip(image * gains, 0, 255)
    if _mirrored(identity):
        image = image[:, ::-1]
    if fake:
        image = _blend_swap(image, np.random.default_rng(10_000 + identity))
    return image.astype(np.uint8)


def _blend_swap(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = 0.47 * height, 0.5 * width  # inner face of the crop above
    mask = np.exp(-((((yy - cy) / (0.2 * height)) ** 2 + ((xx - cx) / (0.18 * width)) ** 2) ** 2))
    donor = Image.fromarray(image.astype(np.uint8)).filter(ImageFilter.GaussianBlur(2.0))
    donor = np.asarray(donor).astype(np.float32) * rng.uniform(0.75, 1.25, size=3)
    mask = mask[..., None]
    return np.clip(image * (1 - mask) + donor * mask, 0, 255)


def frame_with_face(
    size: tuple[int, int],
    identity: int,
    t: float,
    fake: bool = False,
    face_px: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """One RGB frame (height, width) with the identity's head moving slowly over a background."""
    height, width = size
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 200, size=3)
    ramp = np.linspace(0.6, 1.2, width, dtype=np.float32)[None, :, None]
    frame = np.clip(np.ones((height, width, 3), np.float32) * base * ramp, 0, 255)
    head = identity_face(identity, fake)
    target_h = face_px * 2 if face_px else int(min(height, width) * 0.6)
    target_h = max(16, min(target_h, height - 2))
    target_w = max(16, int(head.shape[1] * target_h / head.shape[0]))
    target_w = min(target_w, width - 2)
    head = np.asarray(Image.fromarray(head).resize((target_w, target_h), Image.BILINEAR))
    x = int((width - target_w) * (0.5 + 0.3 * np.sin(2 * np.pi * t)))
    y = int((height - target_h) * (0.5 + 0.2 * np.cos(2 * np.pi * t)))
    frame[y : y + target_h, x : x + target_w] = head
    return frame.astype(np.uint8)


def background_frame(size: tuple[int, int], t: float, seed: int = 0) -> np.ndarray:
    height, width = size
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 255, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    frame = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
    return np.roll(frame, int(t * width), axis=1)


def write_video(
    path: Path,
    num_frames: int = 16,
    size: tuple[int, int] = (240, 320),
    identity: int = 0,
    fake: bool = False,
    face: bool = True,
    fps: int = 25,
    rotation: int = 0,
    face_px: int | None = None,
    gop: int | None = None,
    seed: int | None = None,
) -> Path:
    """Write an H.264 mp4 (`size` is height, width); `face=False` makes a faceless clip."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seed = identity if seed is None else seed
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        options = {"preset": "ultrafast", "crf": "20"}
        if gop:
            options["g"] = str(gop)
        stream.options = options
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            t = i / max(1, num_frames)
            if face:
                image = frame_with_face(size, identity, t, fake, face_px=face_px, seed=seed)
            else:
                image = background_frame(size, t, seed=seed)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_mask_video(
    path: Path,
    num_frames: int = 16,
    size: tuple[int, int] = (240, 320),
    box: tuple[float, float, float, float] = (0.0, 0.5, 0.0, 1.0),
    fps: int = 25,
) -> Path:
    """A dataset's mask video (as FF++ ships in masks/): white inside `box` (top, bottom, left,
    right as fractions of the frame), black elsewhere, in every frame."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    image = np.zeros((height, width, 3), np.uint8)
    top, bottom, left, right = box
    image[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = 255
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "10"}
        for _ in range(num_frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A cluttered background (several octaves of smoothed colour noise plus edges), uint8."""
    out = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((64, 0.5), (16, 0.3), (4, 0.2)):
        small = rng.uniform(0, 255, size=(height // cell + 2, width // cell + 2, 3)).astype(np.uint8)
        out += weight * np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), np.float32)
    stripes = (np.sin(np.arange(width, dtype=np.float32) / rng.uniform(6, 20)) > 0.7)[None, :, None]
    out = np.where(stripes, out * 0.6, out)  # hard vertical edges: shelves, window frames
    out = 0.4 * out + 0.6 * out.mean(axis=2, keepdims=True)  # muted, like a room
    return np.clip(out, 0, 255).astype(np.uint8)


def write_footage(
    path: Path,
    num_frames: int = 300,
    size: tuple[int, int] = (1080, 1920),
    identity: int = 0,
    fake: bool = False,
    fps: int = 30,
    face_px: int | None = None,
    faces: int = 2,
    noise: float = 4.0,
    crf: int = 23,
    preset: str = "medium",
    gop: int = 250,
    portrait: bool = False,
    seed: int | None = None,
    truth: list | None = None,
) -> Path:
    """An H.264 clip as hard as real footage: a panning textured background, sensor noise, `faces`
    people (the first the largest, each moving on its own path), c23-like compression (crf 23,
    B-frames, keyframes every `gop` frames). `portrait` stores a `size` (height, width) portrait
    frame sideways with 90 degree rotation metadata, as phones do. The clip is streamed frame by
    frame (bounded memory at 1080p). `truth`, a list, gets each frame's true face boxes (upright
    frame coordinates, MTCNN's box convention), one list per frame: benchmarks tell a detector's
    false positives from faces with it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(identity if seed is None else seed)
    height, width = size
    main_px = face_px or int(min(height, width) * 0.22)
    pan = int(0.25 * width)
    texture = _texture(height + pan // 4, width + pan, rng)
    people = []
    for k in range(faces):
        px = main_px if k == 0 else int(main_px * rng.uniform(0.45, 0.7))
        key = identity * 10 + k
        head = identity_face(key, fake and k == 0)
        head_h = min(px * 2, height - 2)
        head_w = min(int(head.shape[1] * head_h / head.shape[0]), width - 2)
        head = np.asarray(Image.fromarray(head).resize((head_w, head_h), Image.BILINEAR))
        centre = (0.5, 0.5) if k == 0 else (rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.85))
        fx1, fy1, fx2, fy2 = PORTRAIT_FACE
        face = (
            (1 - fx2, fy1, 1 - fx1, fy2) if _mirrored(key) else PORTRAIT_FACE
        )  # in the head image, as fractions
        people.append((head, face, centre, rng.uniform(0, 2 * np.pi), rng.uniform(0.03, 0.08)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = (width, height) if portrait else (height, width)
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": preset, "crf": str(crf), "g": str(gop)}
        if portrait:
            stream.set_display_rotation(90)
        for i in range(num_frames):
            t = i / max(1, num_frames)
            dx, dy = int(pan * t), int(pan // 8 * (1 + np.sin(2 * np.pi * t)))
            frame = texture[dy : dy + height, dx : dx + width].astype(np.int16)
            boxes = []
            for head, (fx1, fy1, fx2, fy2), (cx, cy), phase, amp in people:
                h, w = head.shape[:2]
                x = int(
                    np.clip(cx * width - w / 2 + amp * width * np.sin(2 * np.pi * t + phase), 0, width - w)
                )
                y = int(
                    np.clip(cy * height - h / 2 + amp * height * np.cos(2 * np.pi * t + phase), 0, height - h)
                )
                frame[y : y + h, x : x + w] = head
                boxes.append((x + fx1 * w, y + fy1 * h, x + fx2 * w, y + fy2 * h))
            if truth is not None:
                truth.append(boxes)
            if noise:
                frame += (
                    rng.normal(0, noise, size=(height // 2, width // 2, 1))
                    .astype(np.int16)
                    .repeat(2, 0)
                    .repeat(2, 1)
                )
            image = np.clip(frame, 0, 255).astype(np.uint8)
            if portrait:  # stored sideways; the decoder turns it back upright
                image = np.ascontiguousarray(np.rot90(image, k=-1))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(
    path: Path, identity: int = 0, fake: bool = False, size: tuple[int, int] = (224, 224), face: bool = True
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = (
        frame_with_face(size, identity, 0.25, fake, seed=identity)
        if face
        else background_frame(size, 0.3, identity)
    )
    Image.fromarray(image).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# whole dataset trees in the published layouts (small)


def make_ffpp_tree(
    root: Path,
    ids: tuple[str, ...] = ("000", "001", "002", "003"),
    methods=("Deepfakes", "Face2Face"),
    compression: str = "c23",
    **video,
) -> Path:
    """original_sequences/youtube/<c>/videos/<id>.mp4 and manipulated_sequences/<m>/<c>/videos/<a>_<b>.mp4
    with pairs (ids[0], ids[1]), (ids[1], ids[0]), (ids[2], ids[3]), ... as in FF++."""
    root = Path(root)
    for n, vid in enumerate(ids):
        write_video(
            root / "original_sequences/youtube" / compression / "videos" / f"{vid}.mp4", identity=n, **video
        )
    pairs = [(ids[i], ids[i + 1]) for i in range(0, len(ids) - 1, 2)]
    pairs += [(b, a) for a, b in pairs]
    for method in methods:
        for target, source in pairs:
            write_video(
                root / "manipulated_sequences" / method / compression / "videos" / f"{target}_{source}.mp4",
                identity=ids.index(target),
                fake=True,
                **video,
            )
    return root


def make_dfdc_tree(
    root: Path, originals: int = 3, fakes_per_original: int = 2, parts: int = 1, **video
) -> Path:
    root = Path(root)
    for part in range(parts):
        folder = root / f"dfdc_train_part_{part}"
        metadata = {}
        for n in range(originals):
            identity = part * originals + n
            real = f"r{part}{n:02d}.mp4"
            write_video(folder / real, identity=identity, **video)
            metadata[real] = {"label": "REAL", "split": "train", "original": None}
            for k in range(fakes_per_original):
                fake = f"f{part}{n:02d}{k}.mp4"
                write_video(folder / fake, identity=identity, fake=True, seed=identity * 7 + k, **video)
                metadata[fake] = {"label": "FAKE", "split": "train", "original": real}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metadata.json").write_text(json.dumps(metadata))
    return root


def make_celebdf_tree(root: Path, celebs: int = 3, clips: int = 2, youtube: int = 2, **video) -> Path:
    root = Path(root)
    test_lines = []
    for c in range(celebs):
        for k in range(clips):
            write_video(root / "Celeb-real" / f"id{c}_{k:04d}.mp4", identity=c, **video)
            source = (c + 1) % celebs
            write_video(
                root / "Celeb-synthesis" / f"id{c}_id{source}_{k:04d}.mp4", identity=c, fake=True, **video
            )
    for y in range(youtube):
        write_video(root / "YouTube-real" / f"{y:05d}.mp4", identity=50 + y, **video)
    # the official test list: clip 0 of the first celebrity (real and fake) and the first YouTube clip
    test_lines.append("1 Celeb-real/id0_0000.mp4")
    test_lines.append("0 Celeb-synthesis/id0_id1_0000.mp4")
    test_lines.append("1 YouTube-real/00000.mp4")
    (root / "List_of_testing_videos.txt").write_text("\n".join(test_lines) + "\n")
    return root


def make_folder_tree(root: Path, images: int = 3, videos: int = 1, **video) -> Path:
    root = Path(root)
    for label in ("real", "fake"):
        for n in range(images):
            write_image(root / label / "stills" / f"{label}_{n}.png", identity=n, fake=label == "fake")
        for n in range(videos):
            write_video(
                root / label / "clips" / f"{label}_{n}.mp4", identity=n, fake=label == "fake", **video
            )
    return root


def make_csv_tree(root: Path, groups: int = 10, with_split: bool = True, size: int = 96) -> Path:
    """Face crops listed in metadata.csv (file,label,group,split), like the dfdc-faces benchmark."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["file,label,group,split"]
    for g in range(groups):
        split = "train" if g < groups * 0.6 else "val" if g < groups * 0.8 else "test"
        for label in ("real", "fake"):
            name = f"images/g{g:03d}_{label}.jpg"
            image = identity_face(g, fake=label == "fake")
            Image.fromarray(image).resize((size, size)).save(root / name)
            lines.append(f"{name},{label},g{g:03d}," + (split if with_split else ""))
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def make_prepared_crops(
    root: Path, groups: int = 12, size: int = 48, datasets: tuple[str, ...] = ("a",)
) -> Path:
    """Face crops and the manifest.csv `fakefinder prepare` would write for them (split by group:
    60/20/20); returns the manifest's path."""
    import pandas as pd

    root = Path(root)
    rows = []
    for dataset in datasets:
        for g in range(groups):
            split = "train" if g < groups * 0.6 else "val" if g < groups * 0.8 else "test"
            for label in ("real", "fake"):
                rel = f"{dataset}/{split}/{label}/g{g:03d}/000000_0.jpg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                face = identity_face(g, fake=label == "fake")
                Image.fromarray(face).resize((size, size)).save(root / rel, quality=95)
                rows.append(
                    {
                        "dataset": dataset,
                        "video_id": f"{dataset}:g{g:03d}_{label}",
                        "group": f"g{g}",
                        "label": label,
                        "method": label,
                        "split": split,
                        "frame_index": 0,
                        "path": rel,
                    }
                )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


CLASS_COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (40, 50, 210)}


def make_class_folders(root: Path, per_split=(("train", 10), ("val", 4), ("test", 4)), seed: int = 0) -> Path:
    """`root/<split>/<class>/*.jpg` for an image classifier: each class a dominant colour with noise
    and a random bright square, learnable in seconds."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in per_split:
        for name, colour in CLASS_COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (40, 48, 3)), 0, 255).astype(np.uint8)
                y, x = rng.integers(0, 30, 2)
                pixels[y : y + 10, x : x + 10] = 255
                Image.fromarray(pixels).save(folder / f"{name}_{i}.jpg", quality=95)
    return root


def llava_conversation(label: int, i: int) -> list[dict]:
    word = "fake" if label else "real"
    return [
        {"from": "human", "value": "<image>\nIs this face real or fake?"},
        {"from": "gpt", "value": f"Sample {i} looks {word}.\n### Answer: {word}"},
    ]


def make_llava_set(root: Path, count: int = 12, splits: tuple[str, ...] = ("train",), seed: int = 0) -> Path:
    """Images whose red channel tells the class (not square: padding is exercised) and one LLaVA
    conversation JSON per split about them (`root/<split>.json`, images in `root/images`)."""
    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        label = i % 2
        pixels = (rng.random((40, 32, 3)) * 255).astype("uint8")
        pixels[..., 0] = 220 if label else 20
        Image.fromarray(pixels).save(images / f"{i}.png")
        items.append({"id": f"s{i}", "image": f"{i}.png", "conversations": llava_conversation(label, i)})
    for split in splits:
        (root / f"{split}.json").write_text(json.dumps(items))
    return root


WORDS = (
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "lemon",
    "piano",
    "candle",
    "forest",
    "rocket",
    "garden",
    "silver",
    "window",
    "planet",
    "bridge",
    "marble",
    "orange",
    "pepper",
    "ladder",
    "button",
)


def instruction_task(rng: np.random.Generator) -> dict:
    """One instruction with a short answer that can be checked exactly: a sum, the larger of two
    numbers, odd or even, a word in capitals, a word's first letter."""
    kind = int(rng.integers(5))
    a, b = (int(x) for x in rng.integers(1, 50, size=2))
    word = WORDS[int(rng.integers(len(WORDS)))]
    if kind == 0:
        return {"instruction": f"What is {a} + {b}? Answer with the number only.", "response": str(a + b)}
    if kind == 1:
        b = b if b != a else a + 1
        return {
            "instruction": f"Which number is larger, {a} or {b}? Answer with the number only.",
            "response": str(max(a, b)),
        }
    if kind == 2:
        return {
            "instruction": f"Is {a} odd or even? Answer with one word.",
            "response": "odd" if a % 2 else "even",
        }
    if kind == 3:
        return {"instruction": "Write the word in capital letters.", "input": word, "response": word.upper()}
    return {
        "instruction": f"What is the first letter of the word '{word}'? Answer with the letter only.",
        "response": word[0],
    }


def make_instruction_set(
    root: Path, counts: dict[str, int] | None = None, seed: int = 0, conversations_every: int = 4
) -> Path:
    """`root/<split>.jsonl` of checkable instructions (see `instruction_task`); every
    `conversations_every`-th line is written in the conversations form, the rest as
    instruction / input / response."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (counts or {"train": 40, "val": 8, "test": 8}).items():
        lines = []
        for i in range(count):
            task = instruction_task(rng)
            if conversations_every and i % conversations_every == conversations_every - 1:
                prompt = task["instruction"] + (f"\n\n{task['input']}" if "input" in task else "")
                task = {
                    "conversations": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": task["response"]},
                    ]
                }
            lines.append(json.dumps(task))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


SHAPES = ("square", "disc", "triangle")


def draw_shape(draw, kind: str, box: list[int], fill: tuple) -> None:
    """A solid square, disc or triangle (apex up) filling `box` (x0, y0, x1, y1, inclusive)."""
    x0, y0, x1, y1 = box
    if kind == "square":
        draw.rectangle(box, fill=fill)
    elif kind == "disc":
        draw.ellipse(box, fill=fill)
    else:
        draw.polygon([(x0, y1), (x1, y1), (x0 + (x1 - x0 + 1) // 2, y0)], fill=fill)


def shape_scene(
    rng: np.random.Generator,
    size: int = 128,
    objects: tuple[int, int] = (1, 3),
    classes: tuple[str, ...] = SHAPES,
) -> tuple[Image.Image, list[tuple[int, float, float, float, float]]]:
    """A noisy background with solid shapes; their boxes as YOLO rows (class, cx, cy, w, h), normalised."""
    from PIL import ImageDraw

    base = rng.integers(70, 150, 3)
    pixels = np.clip(base + rng.normal(0, 18, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    rows = []
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        cls = int(rng.integers(0, len(classes)))
        w, h = (int(v) for v in rng.integers(size // 6, size // 2.5, 2))
        x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        box = [x0, y0, x0 + w - 1, y0 + h - 1]
        kind = classes[cls] if classes[cls] in SHAPES else SHAPES[cls % len(SHAPES)]
        draw_shape(draw, kind, box, colour)
        rows.append((cls, (x0 + w / 2) / size, (y0 + h / 2) / size, w / size, h / size))
    return image, rows


def make_yolo_dataset(
    root: Path,
    counts: dict[str, int] | None = None,
    size: int = 128,
    seed: int = 0,
    classes: tuple[str, ...] = SHAPES,
    background_every: int = 0,
) -> Path:
    """A YOLO dataset of shape scenes with known boxes: images/<split>/*.jpg, labels/<split>/*.txt,
    data.yaml; every `background_every`-th image has no object and no label file."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 32, "val": 8}
    for split, count in counts.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            empty = background_every and i % background_every == background_every - 1
            image, rows = shape_scene(rng, size, (0, 0) if empty else (1, 3), classes)
            image.save(root / "images" / split / f"{split}_{i:04d}.jpg", quality=95)
            if not empty:
                (root / "labels" / split / f"{split}_{i:04d}.txt").write_text(
                    "".join(f"{c} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for c, cx, cy, w, h in rows)
                )
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(classes))
    splits = "".join(f"{split}: images/{split}\n" for split in counts)
    (root / "data.yaml").write_text(f"path: .\n{splits}nc: {len(classes)}\nnames:\n{names}")
    return root


CAPTION_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
}


def make_captioned_folder(
    root: Path, count: int = 12, size: int = 64, seed: int = 0, captions: str = "metadata"
) -> Path:
    """Images of one coloured shape each with their captions ("a red disc on a grey background"):
    a `metadata.jsonl` ({"file_name", "text"}) or, with captions="txt", a same-name .txt per image."""
    from PIL import ImageDraw

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(count):
        colour = list(CAPTION_COLOURS)[int(rng.integers(0, len(CAPTION_COLOURS)))]
        shape = SHAPES[int(rng.integers(0, len(SHAPES)))]
        pixels = np.clip(128 + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        w = int(rng.integers(size // 3, size // 1.6))
        x0, y0 = (int(v) for v in rng.integers(0, size - w, 2))
        box = [x0, y0, x0 + w - 1, y0 + w - 1]
        fill = CAPTION_COLOURS[colour]
        draw_shape(draw, shape, box, fill)
        name = f"img_{i:04d}.png"
        image.save(root / name)
        caption = f"a {colour} {shape} on a grey background"
        if captions == "txt":
            (root / f"img_{i:04d}.txt").write_text(caption + "\n")
        else:
            lines.append(json.dumps({"file_name": name, "text": caption}))
    if captions != "txt":
        (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root
