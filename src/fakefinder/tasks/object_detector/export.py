"""A YOLO detector exported to ONNX (before NMS), checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fakefinder.config import ConfigError
from fakefinder.tasks.object_detector.predict import BoxPredictor


def export(artifact: Path, output: Path, merged: bool = False, **kwargs) -> Path:
    """The object detector as ONNX (`output`: a .onnx file): input `images` (N, 3, S, S, RGB in [0, 1],
    letterboxed), output (N, 4 + classes, anchors): cx cy w h in input pixels and class scores, before
    NMS; checked against PyTorch with onnxruntime."""
    from fakefinder.tasks.registry import read_model

    if merged:
        raise ConfigError("an object detector has no adapter to merge")
    art = read_model(artifact)
    predictor = BoxPredictor(art, "cpu")
    output = Path(output)
    if output.suffix != ".onnx":
        output = output / "model.onnx"
    output.parent.mkdir(parents=True, exist_ok=True)
    model = predictor.model.fuse(verbose=False) if hasattr(predictor.model, "fuse") else predictor.model
    model.eval()
    for module in model.modules():
        if hasattr(module, "export") and hasattr(module, "format"):
            module.export, module.format = True, "onnx"
    size = predictor.imgsz
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        expected = model(x)
        expected = expected[0] if isinstance(expected, (list, tuple)) else expected
        torch.onnx.export(
            model,
            (x,),
            str(output),
            input_names=["images"],
            output_names=["output"],
            dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    import onnxruntime as ort

    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    error = float(np.abs(got - expected.numpy()).max())
    if error > 1e-3 * max(1.0, float(np.abs(expected.numpy()).max())):
        raise RuntimeError(f"{output}: ONNX output differs from PyTorch by {error:.3g}")
    (output.with_suffix(".json")).write_text(
        json.dumps({"classes": art.classes, "input_size": size, "parity_max_abs_error": error}, indent=1)
    )
    return output
