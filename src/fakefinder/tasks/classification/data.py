"""What the trainer reads: manifest rows -> (image tensor, label) batches.

`CropDataset` loads crops (and, for mask supervision, the manipulation mask of each training
crop: see `fakefinder.faces.truth`); `EpochSampler` decides which rows an epoch visits (balanced across
datasets and classes, or a shuffle), splits them between DDP ranks, can start mid-epoch on resume,
and hands each draw its own seed for augmentation.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from fakefinder.faces.manifest import CLASS_NAMES
from fakefinder.faces.truth import difference_mask, source_partners
from fakefinder.media.images import load_rgb
from fakefinder.tasks.classification.augment import self_blend


@contextmanager
def opencv_single_threaded():
    """Start DataLoader iterators inside this block. Workers fork from this process when an iterator
    starts and would each run an OpenCV thread pool (the augmentations use OpenCV), competing with
    training for the cores. Setting OpenCV's thread count inside a forked worker can deadlock (the
    parent's pool threads do not exist there), so it is set here, around the fork, and restored."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a dependency
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


class CropDataset(Dataset):
    """Face crops listed in a manifest. Keys are `(row, seed)` from `EpochSampler` (augmented) or
    plain row numbers (no augmentation, for evaluation).

    With `masks=True` (training with a mask loss) an item is `(image, label, mask, mask_valid)`:
    the mask (1 x size/8 x size/8, augmented with the image) is empty for a real, the blend mask
    for a self-blended fake, the difference from its source crop (`faces.truth.source_partners`) for
    a fake;
    `mask_valid` is 0 for a fake with no partner."""

    def __init__(
        self,
        rows: pd.DataFrame,
        root: Path,
        image_size: int,
        mean,
        std,
        transform=None,
        sbi: float = 0.0,
        perturb=None,
        masks: bool = False,
        mask_threshold: tuple[float, float] = (3.0, 12.0),
        classes: list[str] = CLASS_NAMES,
    ) -> None:
        self.paths = [Path(root) / p for p in rows.path]
        index = {name: i for i, name in enumerate(classes)}
        self.labels = np.array([index[label] for label in rows.label], dtype=np.int64)
        self.image_size = image_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255
        self.transform = transform
        self.sbi = sbi
        self.perturb = perturb  # evaluation-time corruption (robustness tables), applied to every image
        self.masks = masks
        self.mask_threshold = tuple(mask_threshold)
        self.partners = source_partners(rows) if masks else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        image = load_rgb(self.paths[index], self.image_size)
        label = int(self.labels[index])
        mask, valid = None, 1.0
        if self.masks:
            mask = np.zeros(image.shape[:2], dtype=np.float32)
            partner = self.partners[index]
            if label == 1 and partner >= 0:
                mask = difference_mask(
                    image, load_rgb(self.paths[partner], self.image_size), *self.mask_threshold
                )
            elif label == 1:
                valid = 0.0
        if seed is not None:
            rng = np.random.default_rng(seed)
            if self.sbi and label == 0 and rng.random() < self.sbi:
                image, blend = self_blend(image, rng, return_mask=True)
                label = 1
                mask = blend if mask is not None else None
            if self.transform is not None:
                self.transform.set_random_seed(int(rng.integers(2**31 - 1)))
                if mask is not None:
                    out = self.transform(image=image, mask=mask)
                    image, mask = out["image"], out["mask"]
                else:
                    image = self.transform(image=image)["image"]
        if self.perturb is not None:
            image = self.perturb(image)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        tensor = (tensor - self.mean) / self.std
        if mask is None:
            return tensor, torch.tensor(label, dtype=torch.int64)
        import cv2

        side = max(1, self.image_size // 8)
        small = cv2.resize(
            np.ascontiguousarray(mask, dtype=np.float32), (side, side), interpolation=cv2.INTER_AREA
        )
        return (
            tensor,
            torch.tensor(label, dtype=torch.int64),
            torch.from_numpy(small)[None],
            torch.tensor(valid, dtype=torch.float32),
        )


class EpochSampler(Sampler):
    """Yields `(row, seed)` for one epoch, deterministic in (seed, epoch).

    balanced: rows drawn with replacement so every (dataset, label) cell is equally likely;
    shuffle: a permutation; paired: identity groups in random order, each group's rows next to each
    other, so a real face and the fakes made from it share a batch and the model has to learn the
    manipulation rather than the person. Ranks take interleaved rows (whole groups when paired) and
    equal-length slices; `start` skips the draws already consumed before a mid-epoch resume.
    """

    def __init__(
        self,
        labels,
        datasets,
        mode: str = "balanced",
        epoch_size: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        groups=None,
    ) -> None:
        if mode == "paired" and groups is None:
            raise ValueError("the paired sampler needs the manifest's `group` column")
        self.mode = mode
        self.seed = seed
        self.rank, self.world = rank, world
        self.n = len(labels)
        self.epoch_size = epoch_size or self.n
        self.epoch = 0
        self.start = 0
        cells = pd.Series(list(zip(datasets, labels)))
        counts = cells.map(cells.value_counts())
        weights = 1.0 / counts.to_numpy(dtype=np.float64)
        self.weights = weights / weights.sum()
        self.members = []
        if groups is not None:
            codes = pd.factorize(pd.Series(list(groups)), sort=True)[0]
            self.members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)] if len(codes) else []

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _paired(self, rng) -> list[np.ndarray]:
        """Per rank: its own identity groups (a random partition, fixed for the epoch) in random
        order, rows shuffled inside each group, cycled until the rank's share is filled."""
        per_rank = self.epoch_size // self.world
        partition = rng.permutation(len(self.members))
        out = []
        for rank in range(self.world):
            mine = partition[rank :: self.world]
            parts, filled = [], 0
            while filled < per_rank and len(mine):
                for g in rng.permutation(mine):
                    rows = rng.permutation(self.members[g])
                    parts.append(rows)
                    filled += len(rows)
            out.append(np.concatenate(parts)[:per_rank] if parts else np.zeros(0, dtype=np.int64))
        return out

    def order(self) -> list[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.mode == "paired":
            per_rank = self._paired(rng)
            seeds = rng.integers(0, 2**62, size=(self.world, len(per_rank[0])))
            return list(zip(per_rank[self.rank].tolist(), seeds[self.rank].tolist()))
        if self.mode == "balanced":
            rows = rng.choice(self.n, size=self.epoch_size, replace=True, p=self.weights)
        else:
            rows = np.concatenate([rng.permutation(self.n) for _ in range(-(-self.epoch_size // self.n))])[
                : self.epoch_size
            ]
        seeds = rng.integers(0, 2**62, size=len(rows))
        per_rank = len(rows) // self.world
        mine = slice(self.rank, per_rank * self.world, self.world)
        return list(zip(rows[mine].tolist(), seeds[mine].tolist()))

    def __iter__(self):
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return self.epoch_size // self.world - self.start
