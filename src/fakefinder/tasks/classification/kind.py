"""What the two kinds of the timm classification family share as kinds: the run settings in the
shared `train` section, DDP / DeepSpeed on several processes, ONNX / TorchScript export with a
parity check."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from fakefinder.tasks.base import Exported, Kind


class ClassificationKind(Kind):
    run_section: ClassVar[str] = "train"
    reads: ClassVar[tuple[str, ...]] = ("data", "model", "augment", "train", "evaluate", "predict")
    option_sections: ClassVar[tuple[str, ...]] = ("train", "model", "augment")
    multi_process: ClassVar[bool] = True
    draws_heatmaps: ClassVar[bool] = True  # a mask head's map, else a class-activation map
    worker_imports: ClassVar[tuple[str, ...]] = (
        "torch",
        "timm",
        "sklearn.metrics",
        "pandas",
        "matplotlib.figure",
        "albumentations",
        "cv2",
    )

    def heatmap_check(self, artifact: Path) -> dict | None:
        from fakefinder.tasks.classification.heatmaps import read_record

        return read_record(Path(artifact))

    def export(self, artifact: Path, output: Path, merged: bool = False, tolerance: float = 1e-4) -> Exported:
        """`output` ending in .onnx: ONNX, else TorchScript; its logits checked against PyTorch's."""
        from fakefinder.config import ConfigError
        from fakefinder.tasks.classification.export import export

        if merged:
            raise ConfigError(f"--merged: {self.name} models have no adapter to merge")
        report = export(artifact, output, tolerance=tolerance)
        return Exported(
            report.path, f"max |logit difference| {report.max_abs_diff:.2e} over {report.samples} inputs"
        )


def family_kinds() -> list[str]:
    """The registered kinds of this family (their artifacts hold a timm network this package loads)."""
    from fakefinder.tasks.registry import kinds

    return [kind.name for kind in kinds() if isinstance(kind, ClassificationKind)]


def check_family(artifact) -> None:
    """Refuses an artifact that no kind of this family wrote, naming the kinds that would do."""
    from fakefinder.core.artifact import ArtifactError

    family = family_kinds()
    if artifact.kind not in family:
        raise ArtifactError(
            f"{artifact.path} holds a {artifact.kind} model, not a timm classifier ({' or '.join(family)})"
        )
