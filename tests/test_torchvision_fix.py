import subprocess
import sys

import torch

from fakefinder._torchvision_cpu_fix import _nms_cpu


def reference_nms(boxes, scores, threshold):
    def iou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
        return ix * iy / union

    keep = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if all(iou(boxes[i], boxes[k]) <= threshold for k in keep):
            keep.append(i)
    return keep


def test_cpu_nms_matches_the_definition():
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=generator) * 100
    wh = torch.rand(200, 2, generator=generator) * 30 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(200, generator=generator)
    for threshold in (0.1, 0.5, 0.8):
        assert _nms_cpu(boxes, scores, threshold).tolist() == reference_nms(
            boxes.tolist(), scores.tolist(), threshold
        )
    assert _nms_cpu(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_timm_and_torchvision_ops_import_after_fakefinder():
    code = (
        "import fakefinder, timm, torch\nfrom torchvision.ops import batched_nms\nb = torch.tensor([[0, 0, "
        "10, 10], [1, 1, 11, 11], [0, 0, 10, 10.]])\nprint(batched_nms(b, torch.tensor([.9, .8, .7]), "
        "torch.tensor([0, 0, 1]), 0.5).tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0, 2]"


def test_a_find_spec_probe_before_the_import_keeps_the_fix_armed():
    """Libraries (transformers) probe `importlib.util.find_spec("torchvision")` before importing it."""
    code = (
        "import importlib.util, fakefinder, torch\nassert importlib.util.find_spec('torchvision') is not "
        "None\nfrom torchvision.ops import nms\nprint(nms(torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11.]]), "
        "torch.tensor([.9, .8]), 0.5).tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0]"
