"""Load a trained detector from its checkpoint and score face crops in bounded memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from fakefinder.config import Config
from fakefinder.data.training import CropDataset, opencv_single_threaded
from fakefinder.engine.checkpoint import load_checkpoint


@dataclass
class LoadedDetector:
    model: torch.nn.Module
    info: dict  # name, arch, image_size, mean, std, ...
    threshold: float
    class_names: list[str]
    config: Config
    path: Path


def load_detector(path: str | Path, device: str | torch.device = "cpu") -> LoadedDetector:
    """A detector ready for inference: architecture from the checkpoint's config, its weights (in
    `best.pt` the EMA weights when the run kept an EMA) and the decision threshold fitted on
    validation data."""
    from fakefinder.models import create
    from fakefinder.models.detectors import with_tta

    state = load_checkpoint(path)
    config = Config.model_validate(state["config"])
    info = state["model_info"]
    model = create(info["name"], pretrained=False, dropout=info.get("dropout", 0.0), frequency=info.get("frequency"),
                   mask_head=bool(info.get("mask_head", False)), mask_stride=info.get("mask_stride"))
    weights = state["model"]
    model.load_state_dict(weights)
    model.to(device).eval()
    model = with_tta(model, config.model.tta)  # the same view of each image as at validation
    return LoadedDetector(model, info, float(state["threshold"]), list(state["class_names"]), config, Path(path))


@torch.no_grad()
def score_crops(detector: LoadedDetector, rows: pd.DataFrame, root: Path, batch_size: int = 64,
                num_workers: int = 2, device: str | torch.device = "cpu", perturb=None) -> np.ndarray:
    """Probability of 'fake' per row (rows need `path`, relative to `root`, and `label`); images
    stream through a loader, so memory does not grow with the number of rows."""
    info = detector.info
    dataset = CropDataset(rows, root, info["image_size"], info["mean"], info["std"], perturb=perturb)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    scores = []
    memory = torch.channels_last if detector.config.train.channels_last else torch.contiguous_format
    with opencv_single_threaded():
        batches = iter(loader)
    for images, _ in batches:
        logits = detector.model(images.to(device, memory_format=memory))
        scores.append(torch.sigmoid(logits.float()).cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros(0)
