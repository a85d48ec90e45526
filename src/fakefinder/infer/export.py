"""Export a trained detector (its model artifact) to ONNX or TorchScript and check it against PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fakefinder.core.errors import FakefinderError
from fakefinder.infer.scoring import load_detector


@dataclass
class ExportReport:
    path: Path
    format: str
    max_abs_diff: float
    samples: int


class ParityError(FakefinderError, RuntimeError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


def export(model: Path, output: Path, tolerance: float = 1e-4, samples: int = 4, opset: int = 17) -> ExportReport:
    """`output` ending in .onnx -> ONNX (dynamic batch), else TorchScript. The exported model's
    logits must match PyTorch's within `tolerance` on random inputs, or `ParityError`."""
    detector = load_detector(model, "cpu")
    model = detector.model.eval()
    size = detector.info["image_size"]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(2, 3, size, size)
    inputs = torch.randn(samples, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(inputs).numpy()
    if output.suffix.lower() == ".onnx":
        torch.onnx.export(model, (example,), str(output), input_names=["image"], output_names=["logit"],
                          dynamic_axes={"image": {0: "batch"}, "logit": {0: "batch"}}, opset_version=opset, dynamo=False)
        import onnxruntime as ort

        session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": inputs.numpy()})[0]
        kind = "onnx"
    else:
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        traced.save(str(output))
        with torch.no_grad():
            got = torch.jit.load(str(output))(inputs).numpy()
        kind = "torchscript"
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= tolerance:
        raise ParityError(f"{output}: exported logits differ from PyTorch by {diff:.2e} (> {tolerance:g})")
    return ExportReport(output, kind, diff, samples)
