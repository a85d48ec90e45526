"""A localiser worth showing, chosen on validation: the detector's mask head refitted on its frozen
features against the true masks (`fakefinder.faces.truth`: misaligned pairs dropped, binary, area
pooled to the feature map), at each feature stride offered, with and without the log face prior as an
extra input channel (the map is then the prior corrected by the features), linear or with a small
hidden layer, or also learning from self-blended reals (SBI, their blend masks as truth), beside the
mask head as trained and the class-activation map. The candidate with the
best pointing game + pixel AUC on the validation fakes wins; the detector's scores never change (the
mask head is not on the path to its logit).

Refitting is cheap: the backbone runs once over the training crops (features cached), and a 1x1
convolution is fitted on the cache in seconds.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

STRIDES = (8, 16)
STEPS = 300
FIT_BATCH = 256  # crops per step of a head's fit
BATCH = 32


@dataclass
class Choice:
    name: str  # "as_trained", "cam" or "refit_s<stride>[_prior][_mlp|_sbi]"
    network: nn.Module | None  # the detector's network with the chosen mask head (None: unchanged)
    stride: int | None
    validation: dict  # candidate -> its validation figures (pointing, pixel_auc) beside the baselines
    fakes: int  # validation fakes with a true mask
    table: pd.DataFrame | None = None  # the per-fake validation figures (`localiser.measure`)
    smooth: float = 0.0  # the blur of its maps (sigma / crop side), chosen with it


def _with_head(network, stride: int, head: nn.Conv2d):
    from fakefinder.tasks.classification.networks import mask_tap

    refitted = copy.deepcopy(network)
    refitted.mask_index, _ = mask_tap(refitted.backbone, refitted.arch, stride)
    refitted.mask_head = head
    return refitted


def _features(
    network, detector, crops: list[np.ndarray], taps: dict[int, int | None]
) -> dict[int, torch.Tensor]:
    """The backbone's feature maps at each stride for a list of crops (no gradients)."""
    from fakefinder.tasks.classification.networks import as_nchw
    from fakefinder.tasks.classification.scoring import memory_format, to_batch

    info = detector.info
    out: dict[int, list[torch.Tensor]] = {s: [] for s in taps}
    indices = sorted({i for i in taps.values() if i is not None})
    backbone = network.backbone
    with torch.no_grad():
        for start in range(0, len(crops), BATCH):
            x = to_batch(crops[start : start + BATCH], info["image_size"], info["mean"], info["std"])
            x = x.contiguous(memory_format=memory_format(detector))
            by_index = {}
            if indices:
                maps = backbone.forward_intermediates(
                    x, indices=indices, intermediates_only=True, stop_early=True
                )
                by_index = dict(zip(indices, maps))
            if None in taps.values():  # the last feature map
                by_index[None] = as_nchw(backbone.forward_features(x), backbone)
            for stride, index in taps.items():
                out[stride].append(by_index[index].float().contiguous())
    return {s: torch.cat(v) for s, v in out.items()}


HIDDEN = 32  # the nonlinear candidates' hidden channels


def _fit_head(
    features: torch.Tensor, targets: torch.Tensor, prior: bool = False, hidden: int = 0, seed: int = 0
) -> nn.Module:
    """A mask head (`PriorMaskHead` with `prior` / `hidden`, else a 1x1 convolution) fitted on
    standardised features to the mask targets (BCE, Adam, random batches), the standardisation folded
    into its first convolution so it reads the raw features."""
    from fakefinder.tasks.classification.networks import PriorMaskHead, log_face_prior

    torch.manual_seed(seed)
    inputs = features
    if prior:
        height, width = features.shape[-2:]
        extra = log_face_prior(height, width, features).expand(features.shape[0], 1, -1, -1)
        inputs = torch.cat([features, extra], dim=1)
    mean = inputs.mean(dim=(0, 2, 3), keepdim=True)
    std = inputs.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    scaled = (inputs - mean) / std
    head = PriorMaskHead(features.shape[1], prior, hidden)
    head.prior = False  # fitted on inputs that already hold the prior channel
    last = head.out[1] if hidden else head.conv
    with torch.no_grad():
        if not hidden:
            head.conv.weight.zero_()
        rate = float(targets.mean().clamp(1e-3, 1 - 1e-3))
        last.bias.fill_(float(np.log(rate / (1 - rate))))
    optimiser = torch.optim.Adam(head.parameters(), lr=0.01 if hidden else 0.05, weight_decay=1e-4)
    order = torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        pick = torch.randint(len(scaled), (min(FIT_BATCH, len(scaled)),), generator=order)
        optimiser.zero_grad()
        F.binary_cross_entropy_with_logits(head(scaled[pick]), targets[pick]).backward()
        optimiser.step()
    with torch.no_grad():
        weight = head.conv.weight / std.view(1, -1, 1, 1)
        head.conv.bias.copy_(head.conv.bias - (weight * mean.view(1, -1, 1, 1)).sum(dim=(1, 2, 3)))
        head.conv.weight.copy_(weight)
    head.prior = prior
    if prior or hidden:
        return head
    return head.conv  # the plain head


def _training_set(rows: pd.DataFrame, root: Path, size: int, limit: int | None):
    """Crops and true masks: the training fakes with a usable truth and as many reals (empty masks)."""
    from fakefinder.faces.truth import manifest_truths
    from fakefinder.media.images import load_rgb

    frame = rows.reset_index(drop=True)
    truths = {i: t for i, t in manifest_truths(frame, root, size, limit).items() if t.mask is not None}
    reals = np.flatnonzero((frame.label == "real").to_numpy())[: len(truths)]
    crops, masks = [], []
    for truth in truths.values():
        crops.append(truth.image)
        masks.append(truth.mask.astype(np.float32))
    for i in reals:
        crops.append(load_rgb(Path(root) / frame.path.iloc[i], size))
        masks.append(np.zeros((size, size), np.float32))
    return crops, masks, len(truths)


def candidates(
    detector, train_rows, root: Path, strides=STRIDES, limit: int | None = None, events=None
) -> dict:
    """name -> the network whose mask head draws that candidate's maps (None: the class-activation
    map of the detector as it is)."""
    from fakefinder.core.events import as_events
    from fakefinder.tasks.classification.heatmaps import bare_network
    from fakefinder.tasks.classification.networks import mask_tap

    events = as_events(events)
    network, _ = bare_network(detector.model)
    out: dict = {"cam": None}
    if getattr(network, "mask_head", None) is not None:
        out["as_trained"] = network
    size = detector.info["image_size"]
    crops, masks, fakes = _training_set(train_rows, root, size, limit)
    if not fakes:
        events.warning("no training fake has a true mask: the mask head cannot be refitted", "localiser")
        return out
    events.log(
        f"refitting the mask head on {fakes} training fakes with a true mask and {len(crops) - fakes} reals",
        "localiser",
    )
    taps = {s: mask_tap(network.backbone, network.arch, s)[0] for s in strides}
    features = _features(network, detector, crops, taps)
    target = torch.from_numpy(np.stack(masks))[:, None]
    for stride, feats in features.items():
        pooled = F.adaptive_avg_pool2d(target, feats.shape[-2:])
        for prior, hidden in ((False, 0), (True, 0), (True, HIDDEN)):
            name = f"refit_s{stride}" + ("_prior" if prior else "") + ("_mlp" if hidden else "")
            out[name] = _with_head(network, stride, _fit_head(feats, pooled, prior, hidden))
    blended, blend_masks = _self_blended(crops[fakes:])
    if blended:  # the same fakes and reals, plus the reals self-blended with their blend masks as truth
        more = _features(network, detector, blended, taps)
        more_target = torch.from_numpy(np.stack(blend_masks))[:, None]
        for stride, feats in features.items():
            both = torch.cat([feats, more[stride]])
            pooled = F.adaptive_avg_pool2d(torch.cat([target, more_target]), feats.shape[-2:])
            out[f"refit_s{stride}_prior_sbi"] = _with_head(network, stride, _fit_head(both, pooled, True))
    return out


def _self_blended(reals: list[np.ndarray], seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Self-blended pseudo-fakes of the reals (SBI) and their true masks (`faces.truth.blend_truth`)."""
    from fakefinder.faces.truth import blend_truth
    from fakefinder.tasks.classification.augment import self_blend

    images, masks = [], []
    for i, real in enumerate(reals):
        image, blend = self_blend(real, np.random.default_rng(seed + i), return_mask=True)
        truth = blend_truth(blend)
        if truth.mask is not None:
            images.append(image)
            masks.append(truth.mask.astype(np.float32))
    return images, masks


SMOOTHING = (0.0, 0.03, 0.06)  # blurs tried on every candidate's maps (sigma / crop side)


def drawers(detector, options: dict, smooth: dict | None = None) -> dict:
    """name -> a drawer of that candidate's maps (`localiser.measure`), mirrored as the detector
    scores, blurred by `smooth[name]` where given."""
    from fakefinder.tasks.classification.heatmaps import heatmaps, smoothed
    from fakefinder.tasks.classification.networks import MirrorAverage
    from fakefinder.tasks.classification.scoring import crop_heatmaps, memory_format, to_batch

    info, mirrored = detector.info, isinstance(detector.model, MirrorAverage)
    smooth = smooth or {}

    def drawer(name, network):
        if network is None:
            return lambda crops, _: smoothed(crop_heatmaps(detector, crops, "cam"), smooth.get(name, 0.0))
        model = MirrorAverage(network) if mirrored else network

        def draw(crops, _):
            x = to_batch(crops, info["image_size"], info["mean"], info["std"])
            x = x.contiguous(memory_format=memory_format(detector))
            return smoothed(heatmaps(model, x, [c.shape[:2] for c in crops], "mask"), smooth.get(name, 0.0))

        return draw

    return {name: drawer(name, network) for name, network in options.items()}


def _with_blurs(draws: dict) -> dict:
    """Every drawer once per blur of `SMOOTHING` (`<name>~<sigma>`), each map drawn once."""
    from fakefinder.tasks.classification.heatmaps import smoothed

    out = {}
    for name, draw in draws.items():
        cache: dict = {}

        def base(crops, rows, draw=draw, cache=cache):
            key = tuple(rows)
            if cache.get("key") != key:
                cache.update(key=key, maps=draw(crops, rows))
            return cache["maps"]

        for sigma in SMOOTHING:
            out[f"{name}~{sigma:g}"] = lambda crops, rows, base=base, sigma=sigma: smoothed(
                base(crops, rows), sigma
            )
    return out


def choose(
    detector, options: dict, val_rows, root: Path, limit: int | None = 300, iou_thresholds=(0.5,)
) -> Choice:
    """The candidate (and blur of its maps) with the best pointing game + pixel AUC on the
    validation fakes."""
    from fakefinder.tasks.deepfake_detector.localiser import measure, summarise

    draws = _with_blurs(drawers(detector, options))
    table, _ = measure(detector, val_rows, root, draws, limit, tuple(iou_thresholds), deletion=False)
    overall = summarise(table)["overall"] if len(table) else {}

    def merit(name: str) -> float:
        figures = overall.get(name, {})
        return (figures.get("pointing") or 0.0) + (figures.get("pixel_auc") or 0.0)

    fallback = "as_trained~0" if "as_trained" in options else "cam~0"
    best = max(draws, key=merit) if len(table) else fallback
    name, sigma = best.rsplit("~", 1)
    refit = re.fullmatch(r"refit_s(\d+)(_prior)?(_mlp|_sbi)?", name)
    stride = int(refit.group(1)) if refit else None
    keep = ("pointing", "pixel_auc")
    validation = {
        key: {k: figures.get(k) for k in keep}
        for key, figures in overall.items()
        if isinstance(figures, dict) and key != "ratios"
    }
    network = options[name] if stride else None
    return Choice(name, network, stride, validation, int(len(table)), table, float(sigma))


def save_choice(detector, choice: Choice, folder: Path) -> Path:
    """The detector's artifact with the chosen mask head (same weights otherwise) written to `folder`;
    an unchanged detector (CAM or the head as trained) is copied as it is."""
    import shutil

    from fakefinder.core.artifact import write_artifact

    source = Path(detector.path)
    if choice.network is None:
        if source.resolve() != Path(folder).resolve():
            shutil.copytree(source, folder, dirs_exist_ok=True)
        return Path(folder)
    artifact = detector.artifact
    architecture = {**artifact.architecture, "mask_head": True, "mask_stride": choice.stride}
    architecture.pop("mask_prior", None)
    architecture.pop("mask_hidden", None)
    if "_prior" in choice.name:
        architecture["mask_prior"] = True
    if choice.name.endswith("_mlp"):
        architecture["mask_hidden"] = HIDDEN
    weights = {k: v for k, v in choice.network.state_dict().items()}
    write_artifact(
        folder,
        artifact.kind,
        architecture,
        artifact.classes,
        artifact.preprocessing,
        weights,
        artifact.threshold,
        {**artifact.training, "mask_head": f"refitted on frozen features at stride {choice.stride}"},
    )
    return Path(folder)
