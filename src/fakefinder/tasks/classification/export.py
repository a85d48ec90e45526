"""Export a trained detector or image classifier (its model artifact) to ONNX or TorchScript, checked
against PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fakefinder.core.errors import FakefinderError


@dataclass
class ExportReport:
    path: Path
    format: str
    max_abs_diff: float
    samples: int


EXPORTABLE = ("deepfake_detector", "image_classifier")  # the kinds whose network is a timm backbone + head


class ParityError(FakefinderError, RuntimeError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


def to_onnx(
    model: torch.nn.Module, example: torch.Tensor, target, output_name: str = "logit", opset: int = 17
) -> None:
    """`model` as ONNX (input `image`, a dynamic batch) into `target`: a path or a file object."""
    torch.onnx.export(
        model,
        (example,),
        target,
        input_names=["image"],
        output_names=[output_name],
        dynamic_axes={"image": {0: "batch"}, output_name: {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )


def export(
    model: Path, output: Path, tolerance: float = 1e-4, samples: int = 4, opset: int = 17
) -> ExportReport:
    """`output` ending in .onnx -> ONNX (dynamic batch), else TorchScript. The exported model's
    logits must match PyTorch's within `tolerance` on random inputs, or `ParityError`."""
    from fakefinder.core.artifact import ArtifactError
    from fakefinder.tasks.classification.model import from_artifact
    from fakefinder.tasks.registry import read_model

    artifact = read_model(model)
    if artifact.kind not in EXPORTABLE:
        raise ArtifactError(
            f"{artifact.path}: export takes {', '.join(EXPORTABLE)} models, not {artifact.kind}"
        )
    model = from_artifact(artifact, "cpu").eval()
    size = artifact.preprocessing["input_size"]
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(2, 3, size, size)
    inputs = torch.randn(samples, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(inputs).numpy()
    if output.suffix.lower() == ".onnx":
        name = "logit" if artifact.architecture.get("num_outputs", 1) == 1 else "logits"
        to_onnx(model, example, str(output), name, opset)
        from fakefinder.core.process import cpu_session

        session = cpu_session(str(output))
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
