"""Binary deepfake detectors: a timm backbone with a one-logit head, and a dual-branch model that
adds a frequency branch (SRM high-pass residuals, or DCT/FFT log-magnitudes) through a small CNN.

Every network separates `features(x)` (a pooled vector) from `classifier(features)` (the logit).
With `mask_head=True` a 1x1 convolution on the backbone's last feature map (or, with `mask_stride`,
on the finer map of a middle stage) also predicts where the face was manipulated
(`forward(x, return_mask=True)`), trained with `train.mask_loss`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _srm_kernels() -> torch.Tensor:
    """The three classic SRM high-pass filters used in steganalysis and forensics (5x5)."""
    k1 = (
        torch.tensor(
            [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]
        )
        / 4.0
    )
    k2 = (
        torch.tensor(
            [
                [-1, 2, -2, 2, -1],
                [2, -6, 8, -6, 2],
                [-2, 8, -12, 8, -2],
                [2, -6, 8, -6, 2],
                [-1, 2, -2, 2, -1],
            ]
        )
        / 12.0
    )
    k3 = (
        torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
        / 2.0
    )
    return torch.stack([k1, k2, k3]).float()


def _dct_matrix(n: int) -> torch.Tensor:
    k = torch.arange(n).float()
    matrix = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    matrix[0] /= math.sqrt(2)
    return matrix


class FrequencyTransform(nn.Module):
    """Fixed (not learned) map from an RGB batch to frequency-domain evidence."""

    def __init__(self, kind: str = "srm", block: int = 8) -> None:
        super().__init__()
        self.kind = kind
        self.block = block
        if kind == "srm":
            self.register_buffer("kernels", _srm_kernels()[:, None].repeat(3, 1, 1, 1), persistent=False)
            self.out_channels = 9
        elif kind == "dct":
            self.register_buffer("dct", _dct_matrix(block), persistent=False)
            self.out_channels = block * block
        elif kind == "fft":
            self.out_channels = 1
        else:
            raise ValueError(f"unknown frequency branch '{kind}' (srm, dct or fft)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "srm":
            return F.conv2d(x, self.kernels.to(x.dtype), padding=2, groups=3).clamp(-3, 3)
        gray = x.mean(dim=1, keepdim=True)
        if self.kind == "fft":
            spectrum = torch.fft.fftshift(torch.fft.fft2(gray.float()), dim=(-2, -1))
            return torch.log1p(spectrum.abs()).to(x.dtype)
        # blockwise DCT: one channel per coefficient, a map of 8x8 blocks
        b = self.block
        height, width = (gray.shape[-2] // b) * b, (gray.shape[-1] // b) * b
        blocks = F.unfold(gray[..., :height, :width].float(), kernel_size=b, stride=b)  # N, b*b, L
        blocks = blocks.transpose(1, 2).reshape(-1, b, b)
        coefficients = self.dct @ blocks @ self.dct.T
        coefficients = coefficients.reshape(x.shape[0], -1, b * b).transpose(1, 2)
        out = coefficients.reshape(x.shape[0], b * b, height // b, width // b)
        return torch.log1p(out.abs()).to(x.dtype)


class FrequencyBranch(nn.Module):
    """Frequency transform then a small CNN to a pooled vector."""

    def __init__(self, kind: str = "srm", width: int = 64) -> None:
        super().__init__()
        self.transform = FrequencyTransform(kind)
        c = self.transform.out_channels
        stride = 1 if kind == "dct" else 2  # DCT maps are already 8x smaller

        def block(cin, cout, s):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, s, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
            )

        self.net = nn.Sequential(
            block(c, width // 2, stride),
            block(width // 2, width, 2),
            block(width, width, 2),
            block(width, width * 2, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.num_features = width * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.transform(x))


def log_face_prior(height: int, width: int, like: torch.Tensor, sigma: float = 0.25) -> torch.Tensor:
    """The log of a centred Gaussian over an (height, width) map (`sigma` in fractions of its size):
    the face prior `fakefinder.engine.localisation.face_prior` in log space, (1, 1, h, w)."""
    ys = (torch.arange(height, device=like.device, dtype=like.dtype) + 0.5) / height - 0.5
    xs = (torch.arange(width, device=like.device, dtype=like.dtype) + 0.5) / width - 0.5
    return (-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))[None, None]


class PriorMaskHead(nn.Module):
    """A mask head over the tapped feature map plus, with `prior`, one more channel: the log face
    prior, so the mask is "the middle of the face" corrected by what the features see
    (`model.mask_prior`); with `hidden`, a 1x1 convolution to that many channels, ReLU, then to one
    (`model.mask_hidden`), else a single 1x1 convolution."""

    def __init__(self, channels: int, prior: bool = True, hidden: int = 0) -> None:
        super().__init__()
        self.prior = prior
        self.conv = nn.Conv2d(channels + int(prior), hidden or 1, kernel_size=1)
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, 1, kernel_size=1)) if hidden else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prior:
            prior = log_face_prior(x.shape[-2], x.shape[-1], x).expand(x.shape[0], 1, -1, -1)
            x = torch.cat([x, prior], dim=1)
        x = self.conv(x)
        return self.out(x) if self.out is not None else x


class Detector(nn.Module):
    """A backbone (timm, no classifier) + optional frequency branch + a head: one logit (a binary
    detector, `forward` gives shape (N,)) or `num_classes` logits (an N-class classifier, (N, C))."""

    def __init__(
        self,
        backbone: nn.Module,
        arch: str,
        dropout: float = 0.0,
        frequency: str | None = None,
        frequency_width: int = 64,
        mask_head: bool = False,
        mask_stride: int | None = None,
        num_classes: int = 1,
        mask_prior: bool = False,
        mask_hidden: int = 0,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = backbone
        self.frequency = FrequencyBranch(frequency, frequency_width) if frequency else None
        features = backbone.num_features + (self.frequency.num_features if self.frequency else 0)
        self.num_features = features
        self.num_classes = num_classes
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))
        self.mask_index, mask_channels = mask_tap(backbone, arch, mask_stride) if mask_head else (None, 0)
        self.mask_head = new_mask_head(mask_channels, mask_prior, mask_hidden) if mask_head else None
        self.pretrained_cfg = dict(getattr(backbone, "pretrained_cfg", {}) or {})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._with_frequency(self.backbone(x), x)

    def _with_frequency(self, pooled: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.frequency is not None:
            pooled = torch.cat([pooled, self.frequency(x).to(pooled.dtype)], dim=1)
        return pooled

    def classifier(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.head(features)
        return logits.squeeze(1) if self.num_classes == 1 else logits

    def forward(self, x: torch.Tensor, return_mask: bool = False):
        """The logit per image; with `return_mask`, also the manipulation-mask logits (N, 1, h, w)
        on the backbone's last feature map."""
        if not return_mask:
            return self.classifier(self.features(x))
        if self.mask_head is None:
            raise ValueError(
                "this network has no mask head (build it with mask_head=True / train.mask_loss > 0)"
            )
        if self.mask_index is None:
            raw = self.backbone.forward_features(x)
            tapped = as_nchw(raw, self.backbone)
        else:  # timm hands middle maps out as NCHW whatever the backbone's own layout
            raw, (tapped,) = self.backbone.forward_intermediates(x, indices=[self.mask_index])
        pooled = self._with_frequency(self.backbone.forward_head(raw), x)
        return self.classifier(pooled), self.mask_head(tapped)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The manipulation-mask logits alone (N, 1, h, w): the backbone runs only as far as the
        mask head reads (heatmaps need no logit)."""
        if self.mask_head is None:
            raise ValueError("this network has no mask head")
        return self.mask_head(tapped_map(self.backbone, self.mask_index, x))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if hasattr(self.backbone, "set_grad_checkpointing"):
            self.backbone.set_grad_checkpointing(enable)


def tapped_map(backbone: nn.Module, index: int | None, x: torch.Tensor) -> torch.Tensor:
    """The feature map a mask head reads (`mask_tap`'s index; None: the last), the backbone run only
    that far."""
    if index is None:
        return as_nchw(backbone.forward_features(x), backbone)
    (tapped,) = backbone.forward_intermediates(x, indices=[index], intermediates_only=True, stop_early=True)
    return tapped


def new_mask_head(channels: int, prior: bool = False, hidden: int = 0) -> nn.Module:
    """A fresh mask head: the refitted kind (`PriorMaskHead`) with a prior or a hidden layer, else
    the plain 1x1 convolution (the weight names every earlier artifact has)."""
    return (
        PriorMaskHead(channels, prior, hidden) if prior or hidden else nn.Conv2d(channels, 1, kernel_size=1)
    )


def mask_tap(backbone: nn.Module, arch: str, stride: int | None) -> tuple[int | None, int]:
    """Which feature map the mask head reads: (None, channels) for the last one, else (the index
    of the deepest stage at `stride` for timm's `forward_intermediates`, its channels)."""
    stages = list(getattr(backbone, "feature_info", None) or [])
    if stride is None or (stages and stages[-1]["reduction"] == stride):
        return None, backbone.num_features
    found = [i for i, stage in enumerate(stages) if stage["reduction"] == stride]
    if not found or not hasattr(backbone, "forward_intermediates"):
        strides = sorted({stage["reduction"] for stage in stages})
        from fakefinder.config import ConfigError  # a ValueError the CLI reports without a traceback

        raise ConfigError(
            f"model.mask_stride={stride}: {arch} has no feature map at that stride (its strides: "
            f"{strides or 'unknown'})"
        )
    return found[-1], stages[found[-1]]["num_chs"]


def as_nchw(raw: torch.Tensor, backbone: nn.Module) -> torch.Tensor:
    """A backbone's last feature map as (N, C, H, W): convolutional maps as they are, Swin-like
    channels-last maps permuted, ViT-like token sequences (prefix tokens dropped) made square."""
    if raw.ndim == 4:
        if getattr(backbone, "output_fmt", "NCHW") == "NHWC":
            return raw.permute(0, 3, 1, 2)
        return raw
    if raw.ndim == 3:
        tokens = raw[:, getattr(backbone, "num_prefix_tokens", 0) :]
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise ValueError(f"cannot lay {tokens.shape[1]} tokens out as a square map for the mask head")
        return tokens.transpose(1, 2).reshape(raw.shape[0], raw.shape[2], side, side)
    raise ValueError(f"unexpected backbone feature shape {tuple(raw.shape)} for the mask head")


class MirrorAverage(nn.Module):
    """Inference wrapper: the mean logit of each image and its horizontal mirror (one batch of 2N)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        logits = self.model(torch.cat([x, torch.flip(x, dims=[3])]))
        return (logits[:n] + logits[n:]) / 2


def with_tta(model: nn.Module, mode: str | None) -> nn.Module:
    """`model` wrapped for the configured test-time augmentation ('none' returns it unchanged)."""
    if mode in (None, "none"):
        return model
    if mode == "hflip":
        return MirrorAverage(model)
    raise ValueError(f"unknown test-time augmentation {mode!r}; choose none or hflip")
