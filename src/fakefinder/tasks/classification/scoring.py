"""A trained detector loaded from its model artifact, and scoring face crops in bounded memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from fakefinder.core.artifact import Artifact
from fakefinder.tasks.classification.data import CropDataset, opencv_single_threaded


@dataclass
class LoadedDetector:
    model: torch.nn.Module  # in eval mode, wrapped for the artifact's test-time augmentation
    artifact: Artifact
    threshold: float
    class_names: list[str]
    session: object | None = None  # an ONNX Runtime session of `model` (`use_onnxruntime`): scores run there
    heatmap_method: str = "auto"  # what its heatmaps are, as checked on validation (`localiser.json`)
    heatmap_smooth: float = 0.0  # their blur, as chosen on validation (`heatmaps.smoothed`)

    @property
    def path(self) -> Path:
        return self.artifact.path

    @property
    def preprocessing(self) -> dict:
        return self.artifact.preprocessing

    @property
    def info(self) -> dict:
        """Input size and normalisation, as the crop loaders take them."""
        p = self.artifact.preprocessing
        return {
            "image_size": p["input_size"],
            "mean": p["mean"],
            "std": p["std"],
            **self.artifact.architecture,
        }


def load_detector(model: str | Path | Artifact, device: str | torch.device = "cpu") -> LoadedDetector:
    """A deepfake detector or image classifier ready for inference from an artifact folder (or an
    older `best.pt`, converted safely): the selected weights and the decision threshold fitted on
    validation."""
    from fakefinder.tasks.classification.kind import check_family
    from fakefinder.tasks.classification.model import from_artifact
    from fakefinder.tasks.registry import read_model

    artifact = model if isinstance(model, Artifact) else read_model(model)
    check_family(artifact)
    from fakefinder.tasks.classification.heatmaps import read_record

    network = from_artifact(artifact, device)
    record = read_record(artifact.path) or {}
    return LoadedDetector(
        network,
        artifact,
        float(artifact.threshold if artifact.threshold is not None else 0.5),
        artifact.classes,
        heatmap_method=record.get("method", "auto"),
        heatmap_smooth=float(record.get("smooth") or 0.0),
    )


def use_onnxruntime(detector: LoadedDetector, tolerance: float = 1e-3) -> None:
    """Run the detector's network in ONNX Runtime (on CPU about 3x faster than PyTorch for
    EfficientNet-Lite0 at 224 px): exported in memory, checked against PyTorch on random inputs
    (`ParityError` beyond `tolerance`), with as many threads as torch uses."""
    import io
    import warnings

    from fakefinder.core.process import cpu_session
    from fakefinder.tasks.classification.export import ParityError, to_onnx

    size = detector.info["image_size"]
    inputs = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    other = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))  # another batch size
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on tracing, not the user's concern
        expected = [detector.model(x).float().numpy() for x in (inputs, other)]
        to_onnx(detector.model, inputs, buffer)
    session = cpu_session(buffer.getvalue())
    diff = max(
        float(np.max(np.abs(session.run(None, {"image": x.numpy()})[0] - e)))
        for x, e in zip((inputs, other), expected)
    )
    if not diff <= tolerance:
        raise ParityError(
            f"{detector.path}: ONNX Runtime logits differ from PyTorch by {diff:.2e} (> {tolerance:g})"
        )
    detector.session = session


def memory_format(detector: LoadedDetector) -> torch.memory_format:
    """channels_last where the model was trained so (faster for convolutional networks on CPU)."""
    return torch.channels_last if detector.preprocessing.get("channels_last") else torch.contiguous_format


def to_batch(crops: list[np.ndarray], size: int, mean, std) -> torch.Tensor:
    """RGB crops -> a normalised NCHW batch at `size` (resized as the training loader resizes)."""
    from PIL import Image

    chunk = [
        c
        if c.shape[:2] == (size, size)
        else np.asarray(Image.fromarray(c).resize((size, size), Image.BICUBIC))
        for c in crops
    ]
    mean = torch.tensor(mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(std).view(1, 3, 1, 1) * 255
    return (torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).float() - mean) / std


@torch.no_grad()
def score_pixels(
    detector: LoadedDetector,
    crops: list[np.ndarray],
    batch_size: int = 32,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Probability of 'fake' per RGB crop (decoded crops from `fakefinder.faces.extract`)."""
    info, scores = detector.info, []
    for start in range(0, len(crops), batch_size):
        x = to_batch(crops[start : start + batch_size], info["image_size"], info["mean"], info["std"])
        if detector.session is not None:
            logits = torch.from_numpy(detector.session.run(None, {"image": x.numpy()})[0])
        else:
            logits = detector.model(x.to(device, memory_format=memory_format(detector)))
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros(0)


def crop_heatmaps(
    detector: LoadedDetector,
    crops: list[np.ndarray],
    method: str = "auto",
    target: list[int] | None = None,
    device: str | torch.device = "cpu",
) -> list[np.ndarray]:
    """Where the network looked in each RGB crop (`fakefinder.tasks.classification.heatmaps`), in
    PyTorch whatever backend scores: float maps in [0, 1] of each crop's size."""
    from fakefinder.tasks.classification.heatmaps import heatmaps, smoothed

    info = detector.info
    x = to_batch(crops, info["image_size"], info["mean"], info["std"])
    x = x.to(device, memory_format=memory_format(detector))
    method = detector.heatmap_method if method == "auto" else method
    maps = heatmaps(detector.model, x, [c.shape[:2] for c in crops], method, target)
    return smoothed(maps, detector.heatmap_smooth)


@torch.no_grad()
def score_crops(
    detector: LoadedDetector,
    rows: pd.DataFrame,
    root: Path,
    batch_size: int = 64,
    num_workers: int = 2,
    device: str | torch.device = "cpu",
    perturb=None,
) -> np.ndarray:
    """Probability of 'fake' per row (rows need `path`, relative to `root`, and `label`); images
    stream through a loader, so memory does not grow with the number of rows."""
    info = detector.info
    dataset = CropDataset(rows, root, info["image_size"], info["mean"], info["std"], perturb=perturb)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    scores = []
    memory = memory_format(detector)
    with opencv_single_threaded():
        batches = iter(loader)
    for images, _ in batches:
        logits = detector.model(images.to(device, memory_format=memory))
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros(0)
