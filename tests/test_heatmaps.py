"""Heatmaps from networks where the answer is known: Grad-CAM of a hand-built network follows the
evidence its logit reads (one logit, and each class of an N-class network), a mask head's map is its
own output, and the mirror test-time augmentation keeps a map's symmetry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fakefinder.tasks.classification.heatmaps import heatmaps, method_of
from fakefinder.tasks.classification.model import create
from fakefinder.tasks.classification.networks import MirrorAverage


class ColourNet(nn.Module):
    """Channel c of the feature map is the input's colour channel c; class c (or the one logit: red)
    is that channel's mean. No mask head: its heatmap is a class-activation map."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.backbone = nn.Sequential(nn.Conv2d(3, 3, 1))
        with torch.no_grad():
            self.backbone[0].weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.backbone[0].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.backbone(x).relu().mean(dim=(2, 3))
        return pooled[:, 0] if self.num_classes == 1 else pooled[:, : self.num_classes]


def squares(side: int = 32) -> torch.Tensor:
    """One image: a red square top left, a green one bottom right, black elsewhere."""
    image = torch.zeros(1, 3, side, side)
    image[0, 0, 2:10, 2:10] = 1.0
    image[0, 1, 20:30, 20:30] = 1.0
    return image


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    return tuple(int(v) for v in np.unravel_index(np.argmax(heatmap), heatmap.shape))


def test_cam_of_one_logit_lights_what_the_logit_reads():
    net = ColourNet(1).eval()
    assert method_of(net) == "cam"
    with pytest.raises(ValueError, match="no mask head"):
        method_of(net, "mask")
    (heatmap,) = heatmaps(net, squares(), [(64, 64)])  # drawn at the crop's size
    assert heatmap.shape == (64, 64) and heatmap.max() == pytest.approx(1.0, abs=0.05)
    y, x = peak(heatmap)
    assert 4 <= y < 20 and 4 <= x < 20  # the red square, not the green one
    assert heatmap[40:60, 40:60].max() < 0.05


def test_an_n_class_cam_follows_the_class_asked_for():
    net = ColourNet(3).eval()
    red, green = (heatmaps(net, squares(), [(32, 32)], target=[c])[0] for c in (0, 1))
    assert 2 <= peak(red)[0] < 10 and 2 <= peak(red)[1] < 10
    assert 20 <= peak(green)[0] < 30 and 20 <= peak(green)[1] < 30


def test_a_mask_heads_map_is_its_output_and_the_mirror_keeps_symmetry():
    torch.manual_seed(0)
    net = create("test_efficientnet", pretrained=False, mask_head=True).eval()
    x = torch.randn(2, 3, 64, 64)
    assert method_of(net) == "mask"
    maps = heatmaps(net, x, [(64, 64)] * 2)
    with torch.no_grad():
        expected = torch.sigmoid(net(x, return_mask=True)[1])
    expected = nn.functional.interpolate(expected, size=(64, 64), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(maps[0], expected[0, 0].numpy(), atol=1e-5)
    mirrored = MirrorAverage(net)
    symmetric = torch.cat([x[:1], torch.flip(x[:1], dims=[3])])  # an image and its mirror
    a, b = heatmaps(mirrored, symmetric, [(64, 64)] * 2)
    np.testing.assert_allclose(a, b[:, ::-1], atol=1e-5)
    cam = heatmaps(net, x, [(64, 64)] * 2, method="cam")  # asked for: a CAM even with a mask head
    assert not np.allclose(cam[0], maps[0], atol=0.05)
