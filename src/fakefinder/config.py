"""The typed run configuration: YAML files, dotted command-line overrides, validation, saving.

One `Config` object describes a run; each command reads the sections it needs. Unknown keys are
errors that name the key (and the closest valid one), so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import copy
import difflib
import logging
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from fakefinder.core.errors import FakefinderError

log = logging.getLogger(__name__)


class ConfigError(FakefinderError, ValueError):
    """A configuration file or override that cannot be used; the message names the key or file."""


# what a run knob means in every kind that has it (a field with no description of its own takes this)
COMMON_DESCRIPTIONS = {
    "eval_batch_size": "Evaluation batch (default: batch_size).",
    "accumulate": "Batches per optimizer step (effective batch: batch_size x accumulate).",
    "weight_decay": "The optimizer's weight decay.",
    "warmup_ratio": "Share of the optimizer steps spent warming the learning rate up.",
    "warmup_steps": "Optimizer steps spent warming the learning rate up.",
    "scheduler": "The learning-rate schedule after warm-up.",
    "grad_checkpointing": "Recompute activations in the backward pass: less memory, slower steps.",
    "grad_clip": "Clip the gradients' global norm at this value.",
    "save_steps": "Save a checkpoint every this many optimizer steps.",
    "save_total_limit": "Checkpoints kept, the newest; null: all.",
    "eval_steps": "Evaluate on the held-out data every this many optimizer steps.",
    "logging_steps": "Log the training figures every this many optimizer steps.",
    "tf32": "Allow TF32 matrix maths on NVIDIA GPUs that have it (Ampere and newer).",
    "val_ratio": "Share of the data held out for validation when no validation file is given.",
}


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated. A field a subclass
    redeclares (another default) keeps its base's description when it gives none; a run knob with
    none takes its `COMMON_DESCRIPTIONS` entry."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, field in cls.model_fields.items():
            if field.description:
                continue
            for base in cls.__mro__[1:]:
                inherited = getattr(base, "model_fields", {}).get(name) if isinstance(base, type) else None
                if inherited is not None and inherited.description:
                    field.description = inherited.description
                    break
            else:
                field.description = COMMON_DESCRIPTIONS.get(name)


TRACKERS = ("tensorboard", "wandb")


class RunSection(Section):
    """The run settings every kind's training reads, spelled the same in every kind: each kind's run
    section (`train`, `llm.train`, `object_detector.train`, ...) extends it with its own settings and
    defaults."""

    output_dir: Path = Field(
        default=Path("output/run"), description="The run folder: checkpoints, logs and the model artifact."
    )
    epochs: float = Field(default=1, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(default=8, ge=1, description="Samples per step and process.")
    lr: float = Field(default=1e-4, gt=0, description="Peak learning rate.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto",
        description="auto: bf16 on a CUDA GPU that has it, else fp16 on a CUDA GPU, fp32 elsewhere; "
        "fp16 needs a CUDA GPU.",
    )
    device: str = Field(
        default="auto", description="auto (a GPU when there is one, else the CPU), cpu, cuda, cuda:1, mps."
    )
    num_workers: int = Field(default=0, ge=0, description="Data loader processes.")
    seed: int = Field(default=0, description="Seeds every random draw of the run.")
    trackers: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="Where metrics also go: tensorboard (a tensorboard/ folder in the run), wandb (Weights & "
        "Biases; needs the wandb package), mlflow (an MLflow run: the config as params, every metric with "
        "its step, the artifact folder, the kind as a tag); [] for none.",
    )
    tracker_project: str | None = Field(
        default=None,
        description="The project (W&B) or experiment (MLflow) runs are logged under (default: fakefinder).",
    )
    tracker_uri: str | None = Field(
        default=None,
        description="MLflow's tracking URI (a team server, http://mlflow:5000); default "
        "$MLFLOW_TRACKING_URI, else a local store, mlflow.db in the working folder. On the platform: the "
        "server's own.",
    )
    tracker_entity: str | None = Field(default=None, description="The W&B team or user (default: yours).")


class LoraSection(Section):
    """A LoRA adapter, spelled the same in every kind that trains one."""

    r: int = Field(default=8, ge=1, description="The adapter's rank.")
    alpha: int | None = Field(
        default=None,
        ge=1,
        description="Scale numerator (the update is scaled by alpha / r); default: r (scale 1).",
    )
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: list[str] | Literal["all-linear"] | None = Field(
        default=None, description="Layer names to adapt, or all-linear."
    )

    @field_validator("target_modules")
    @classmethod
    def _some_modules(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("name at least one module, or all-linear")
        return value


class QuantizedLoraSection(LoraSection):
    """A LoRA adapter that may train on a 4-bit (bitsandbytes) base: QLoRA."""

    quant_type: Literal["nf4", "fp4"] = Field(
        default="nf4", description="4-bit data type of the base's weights."
    )
    double_quant: bool = Field(default=False, description="Quantise the quantisation constants too.")
    compute_dtype: Literal["bf16", "fp16", "fp32"] = Field(
        default="bf16", description="What the 4-bit layers compute in."
    )


# names that sections check values against (the code behind them lives elsewhere: config imports
# no loss, metric or model code)
LOSS_NAMES = {"ce": "cross-entropy", "focal": "focal", "f1": "soft-F1", "auc": "pairwise ranking"}
PERTURBATION_NAMES = ("jpeg90", "jpeg70", "jpeg50", "blur", "downscale0.5", "noise")


Layout = Literal["ffpp", "dfdc", "celebdf", "folder", "csv"]


class DatasetConfig(Section):
    """One input dataset in its published layout."""

    name: str = Field(description="Tag written in every manifest row; must be unique in a run.")
    layout: Layout = Field(
        description="How the dataset is laid out: its published layout, a folder tree or a CSV list."
    )
    root: Path = Field(
        description="The folder the layout starts from (relative paths: from the config file)."
    )
    # FaceForensics++
    compression: Literal["raw", "c23", "c40"] = Field(
        default="c23", description="FF++: which compression's videos to read."
    )
    methods: list[str] | None = Field(
        default=None, description="FF++ manipulation folders to read (default: all present)."
    )
    originals: list[Literal["youtube", "actors"]] | None = Field(
        default=None, description="FF++ original_sequences subsets (default: all present)."
    )
    splits_dir: Path | None = Field(
        default=None,
        description="FF++ official split JSONs (train.json/val.json/test.json); "
        "default <root>/splits when present.",
    )
    # CSV list
    csv_file: str = Field(default="metadata.csv", description="CSV list, relative to root.")
    # every layout
    use_official_split: bool = Field(
        default=True,
        description="Take the dataset's own train/val/test split where it has one (FF++ split JSONs, DFDC "
        "folders, Celeb-DF's test list); the rest is split by data.split.",
    )
    max_items: int | None = Field(default=None, ge=1, description="Read at most this many files.")

    @field_validator("name")
    @classmethod
    def _name_is_a_tag(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f"dataset name {value!r} must be letters, digits, '_', '-' or '.'")
        return value


class SplitConfig(Section):
    """Shares of identity groups (a fake and the real videos it was made from stay in one split) for
    data without an official split; they sum to 1."""

    train: float = Field(default=0.8, ge=0, description="Share of identity groups in train.")
    val: float = Field(default=0.1, ge=0, description="Share of identity groups in val.")
    test: float = Field(default=0.1, ge=0, description="Share of identity groups in test.")
    seed: int = Field(default=0, description="Seeds the draw of groups into splits.")

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split ratios train+val+test must sum to 1 (got {total:g})")
        return self


class DataConfig(Section):
    """The datasets a run reads and how frames are taken from their videos."""

    datasets: list[DatasetConfig] = Field(
        default_factory=list, description="The input datasets, each in its layout (see data.datasets.N.*)."
    )
    frames_per_video: int = Field(
        default=32, ge=1, description="Frames taken from each video, spread evenly over it."
    )
    frame_stride: int | None = Field(
        default=None, ge=1, description="Take every Nth frame (capped by frames_per_video)."
    )
    seek: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="auto: seek only when targets are further apart than the keyframe interval.",
    )
    split: SplitConfig = Field(default_factory=SplitConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> DataConfig:
        names = [d.name for d in self.datasets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"dataset names must be unique, repeated: {duplicates}")
        return self


class FacesConfig(Section):
    detect: bool = Field(default=True, description="false: inputs are already face crops; resize them only.")
    detector: str = Field(default="retinaface", description="The first detector tried on every frame.")
    fallback: list[str] = Field(
        default_factory=lambda: ["mtcnn", "opencv"],
        description="Tried in order on the frames still without a face.",
    )
    detector_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Settings a detector takes, by its name; yolo (a face detector trained "
        "as an object_detector) needs {model: <its artifact>} and takes class (default: face, or its only "
        "class).",
    )
    min_score: float = Field(default=0.7, ge=0, le=1, description="Lowest detector confidence kept.")
    min_face_px: int = Field(default=20, ge=1, description="Smallest face side, in source pixels.")
    detect_max_side: int | None = Field(
        default=720,
        ge=64,
        description="Downscale frames so the longer side is at most this before detection "
        "(boxes map back to full resolution); faces under 20 px at that scale are not searched (53 px in a "
        "1080p frame, 36 px in a 720p one at 720); null detects at full resolution.",
    )
    box_convention: Literal["mtcnn", "detector"] = Field(
        default="mtcnn",
        description="mtcnn: every face detector's box is mapped into MTCNN's convention before the "
        "margin, so crops are framed alike whichever face detector fired; detector: boxes as each one draws "
        "them (models trained before the mapping existed).",
    )
    margin: float = Field(
        default=0.3,
        ge=0,
        description="Grow the box by this fraction of its side (0.3 = 1.3x); values >= 1 are "
        "read as a scale factor (1.3 = 1.3x).",
    )
    square: bool = Field(default=True, description="Make the crop window square (the longer side wins).")
    size: int = Field(default=224, ge=8, description="Side of the saved crop in pixels.")
    select: Literal["largest", "confident", "all"] = Field(
        default="largest",
        description="Faces kept per frame: the largest, the most confident, or all (tracked across frames).",
    )
    batch_size: int = Field(default=8, ge=1, description="Frames per face-detector batch.")
    reuse_real_boxes: bool = Field(
        default=False,
        description="Crop a fake with the boxes found in its source real video (same scene).",
    )

    @property
    def scale(self) -> float:
        """The crop side as a multiple of the detected box side."""
        return self.margin if self.margin >= 1 else 1.0 + self.margin


class PrepareConfig(Section):
    """Where and how `prepare` writes face crops and the manifest."""

    output_dir: Path = Field(
        default=Path("output/prepared"), description="Crops, manifest, summary.json and failures.csv."
    )
    image_format: Literal["jpg", "png"] = Field(default="jpg", description="How crops are saved.")
    jpeg_quality: int = Field(default=95, ge=1, le=100, description="JPEG quality of saved crops.")
    manifest_name: str = Field(
        default="manifest.csv", description="manifest.csv or manifest.parquet (needs pyarrow)."
    )
    num_workers: int = Field(default=1, ge=0, description="Worker processes over videos (0: inline).")
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch threads per worker (default: the cores shared among workers)."
    )

    @field_validator("manifest_name")
    @classmethod
    def _known_manifest_format(cls, value: str) -> str:
        if not value.endswith((".csv", ".parquet")):
            raise ValueError(f"manifest_name {value!r} must end in .csv or .parquet")
        return value


class ModelConfig(Section):
    name: str = Field(
        default="efficientnet_b4",
        description="A fakefinder preset or any timm name; 'random:tiny': a tiny random EfficientNet (tests, "
        "demos; never pretrained).",
    )
    pretrained: bool | str = Field(
        default=False,
        description="false; true (timm hub weights); a weights file; or 'package:efficientnet_lite0'.",
    )
    frequency: Literal["srm", "dct", "fft"] | None = Field(
        default=None, description="Add a frequency branch (dual-branch detector)."
    )
    dropout: float = Field(default=0.2, ge=0, lt=1, description="Dropout before the classification head.")
    drop_path: float | None = Field(
        default=None, ge=0, lt=1, description="Stochastic depth rate of the backbone (timm's drop_path_rate)."
    )
    image_size: int = Field(
        default=224, ge=16, description="Side of the network's input; crops are resized to it."
    )
    mean: tuple[float, float, float] | None = Field(default=None, description="Default: the backbone's.")
    std: tuple[float, float, float] | None = Field(default=None, description="Default: the backbone's.")
    tta: Literal["none", "hflip"] = Field(
        default="none",
        description="Test-time augmentation for validation, evaluate, predict and export: hflip averages "
        "the logits of the image and its mirror.",
    )
    mask_head: bool = Field(
        default=False,
        description="Also predict where the face was manipulated (a 1x1 conv on the last feature map); "
        "switched on by train.mask_loss > 0.",
    )
    mask_stride: int | None = Field(
        default=None,
        ge=1,
        description="Put the mask head on the backbone's feature map at this stride (e.g. 16: a finer map "
        "from a middle stage) instead of the last one.",
    )


class AugmentConfig(Section):
    """Train-time augmentation (albumentations) and self-blended pseudo-fakes."""

    enabled: bool = Field(default=True, description="false: no augmentation at all.")
    hflip: float = Field(default=0.5, ge=0, le=1, description="Probability of a horizontal flip.")
    rotate: float = Field(default=0.3, ge=0, le=1, description="Probability of a rotation.")
    rotate_limit: float = Field(default=10.0, ge=0, description="Largest rotation, in degrees.")
    jpeg: float = Field(default=0.3, ge=0, le=1, description="Probability of a JPEG recompression.")
    jpeg_quality: tuple[int, int] = Field(default=(40, 95), description="Its quality range.")
    blur: float = Field(default=0.1, ge=0, le=1, description="Probability of a blur.")
    color_jitter: float = Field(
        default=0.3, ge=0, le=1, description="Probability of a brightness/contrast/colour change."
    )
    downscale: float = Field(
        default=0.1, ge=0, le=1, description="Probability of a down- and up-scale (lost detail)."
    )
    cutout: float = Field(default=0.2, ge=0, le=1, description="Probability of blanking random patches.")
    sbi: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of real training crops turned into self-blended fakes (label fake).",
    )
    sbi_reals_only: bool = Field(default=False, description="Train on real crops only (+ their SBI fakes).")


class EarlyStoppingConfig(Section):
    metric: Literal["macro_f1", "auc", "loss", "accuracy", "ap", "eer"] = Field(
        default="macro_f1",
        description="The validation figure that selects the best epoch (and stops the run when it stalls).",
    )
    patience: int | None = Field(
        default=10, ge=1, description="Epochs without improvement; null: never stop."
    )


class TrainConfig(RunSection):
    manifest: Path | None = Field(default=None, description="Default: <prepare.output_dir>/manifest.csv.")
    datasets: list[str] | None = Field(default=None, description="Train on these manifest datasets only.")
    val_datasets: list[str] | None = Field(
        default=None, description="Validate on these datasets (cross-dataset selection); default: same."
    )
    output_dir: Path = Path("output/train")
    epochs: int = Field(default=10, ge=1)
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps.")
    epoch_size: int | None = Field(default=None, ge=1, description="Samples per epoch (default: all rows).")
    batch_size: int = Field(default=32, ge=1)
    eval_batch_size: int | None = Field(default=None, ge=1)
    val_max_samples: int | None = Field(default=None, ge=1, description="Evaluate on a fixed subset.")
    optimizer: Literal["adamw", "sgd"] = Field(
        default="adamw", description="adamw, or sgd (Nesterov momentum)."
    )
    lr: float = Field(default=1e-4, gt=0)
    head_lr_scale: float = Field(default=1.0, gt=0, description="lr multiplier for the new head.")
    min_lr: float = Field(default=1e-6, ge=0, description="The floor cosine and plateau decay to.")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="sgd's momentum.")
    weight_decay: float = Field(default=0.01, ge=0, description="Decoupled weight decay (AdamW) or L2 (SGD).")
    scheduler: Literal["cosine", "step", "plateau", "constant"] = Field(
        default="cosine",
        description="lr after warm-up: cosine to min_lr; step (x gamma every step_epochs); plateau (x gamma "
        "when the selection metric stalls); constant.",
    )
    warmup_epochs: float = Field(
        default=1.0, ge=0, description="Linear warm-up, in epochs (fractions allowed)."
    )
    step_epochs: int = Field(default=10, ge=1, description="step scheduler: decay every N epochs.")
    gamma: float = Field(default=0.1, gt=0, le=1, description="lr factor of each step or plateau decay.")
    grad_clip: float | None = Field(
        default=1.0, gt=0, description="Clip the gradients' global norm; null: no clip."
    )
    accumulate: int = Field(default=1, ge=1)
    ema: float | None = Field(default=None, gt=0, lt=1, description="EMA decay, e.g. 0.999.")
    grad_checkpointing: bool = False
    channels_last: bool = Field(
        default=False, description="NHWC memory layout (faster convolutions on GPUs)."
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the network for training (faster steps on a GPU "
        "once the first ones have compiled); not with train.deepspeed.",
    )
    loss: dict[str, float] = Field(
        default_factory=lambda: {"ce": 1.0},
        description="Weighted sum of losses: ce (cross-entropy), focal, f1 (soft macro-F1), auc (pairwise "
        "ranking), e.g. {ce: 0.5, focal: 0.3, f1: 0.2}.",
    )
    focal_gamma: float = Field(default=2.0, ge=0, description="The focal loss's focusing exponent.")
    label_smoothing: float = Field(default=0.0, ge=0, lt=0.5, description="Label smoothing of the ce loss.")
    mask_loss: float = Field(
        default=0.0,
        ge=0,
        description="Weight of the manipulation-mask loss (per-pixel BCE on the model's mask head). Targets: "
        "empty for reals; for a fake, the smoothed difference from its source crop (its recorded source "
        "video, else its identity group's only real video, at the same frame and face); for a self-blended "
        "fake, its blend mask. Fakes without a source crop do not count.",
    )
    mask_refit: bool = Field(
        default=False,
        description="Deepfake detectors: after training, refit the mask head on the frozen features against "
        "the true masks (misaligned pairs dropped) and keep whichever localises best on validation: the "
        "refitted head (at stride 8 or 16), the head as trained, or a class-activation map. Scores are "
        "unchanged.",
    )
    mask_threshold: tuple[float, float] = Field(
        default=(3.0, 12.0),
        description="Mean absolute pixel difference (0-255, after smoothing) mapped to mask 0 and 1.",
    )
    sampler: Literal["balanced", "shuffle", "paired"] = Field(
        default="balanced",
        description="balanced: equal (dataset, class) cells; shuffle: a permutation; paired: whole identity "
        "groups together (a real beside its fakes in one batch).",
    )
    class_weights: bool = Field(default=False, description="Weight the loss by inverse class frequency.")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    num_workers: int = Field(default=2, ge=0)
    num_processes: int = Field(
        default=1,
        ge=1,
        description="DDP / DeepSpeed processes, one per GPU, for a "
        "platform job (which launches them with torchrun); the CLI is launched with torchrun.",
    )
    save_steps: int | None = Field(
        default=None,
        ge=1,
        description="Also checkpoint mid-epoch, every this many steps "
        "(each epoch's end is always checkpointed).",
    )
    logging_steps: int = Field(
        default=10,
        ge=1,
        description="Training loss (and lr, gradient norm) to the trackers every this many steps.",
    )
    plots: bool = Field(default=True, description="Draw the training curves (curves.png) after each epoch.")
    backup_dir: Path | None = Field(default=None, description="Copy checkpoints and logs here each epoch.")
    deepspeed: str | None = Field(
        default=None,
        description="Train through DeepSpeed: zero0, zero1, zero2, or a DeepSpeed JSON file (ZeRO stage "
        "0-2; batch, accumulation and clipping are filled in from train.*). Launch with torchrun or "
        "deepspeed.",
    )

    @field_validator("loss")
    @classmethod
    def _known_losses(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(LOSS_NAMES))
        if unknown:
            raise ValueError(f"unknown loss {unknown}; choose from {sorted(LOSS_NAMES)}")
        if any(w < 0 for w in value.values()) or sum(value.values()) <= 0:
            raise ValueError(f"loss weights must be >= 0 with a positive sum, got {value}")
        return value


class EvalSetConfig(Section):
    """One named set the evaluation scores and reports apart (a dataset, a split, raw videos)."""

    name: str = Field(description="The set's name in metrics.json and the report.")
    manifest: Path | None = Field(default=None, description="Default: the run's prepared manifest.")
    split: str = Field(default="test", description="The manifest split to score.")
    datasets: list[str] | None = Field(
        default=None, description="Only these manifest datasets (default: all)."
    )
    raw: DatasetConfig | None = Field(
        default=None,
        description="Raw videos/images in a published layout (as in data.datasets) instead of prepared "
        "crops: faces are found as the model was trained (predict.faces overrides) and each file is scored "
        "as predict scores it. With official splits, the items of `split`; else all of them.",
    )


class EvaluateConfig(Section):
    models: list[Path] = Field(
        default_factory=list,
        description="Model artifacts (folders with model.json, or "
        "older best.pt files); default: <train.output_dir>/model.",
    )
    sets: list[EvalSetConfig] = Field(
        default_factory=list, description="Default: the manifest's test split, one set per dataset."
    )
    aggregation: Literal["mean", "max", "topk", "confident"] = Field(
        default="mean",
        description="Frame scores -> one per video: mean, max, topk (mean of the top_k), confident (the "
        "mean of the confidently fake frames when enough are, else of the confidently real, else all).",
    )
    top_k: int = Field(default=3, ge=1, description="Frames the topk aggregation averages.")
    threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Default: the threshold fitted on validation (in the checkpoint).",
    )
    perturbations: list[str] = Field(
        default_factory=list, description="e.g. [jpeg90, jpeg70, jpeg50, blur, downscale0.5, noise] or [all]."
    )
    output_dir: Path = Field(
        default=Path("output/evaluate"), description="metrics.json, report.html, predictions, plots."
    )
    batch_size: int = Field(default=64, ge=1, description="Crops per forward pass.")
    num_workers: int = Field(default=2, ge=0, description="Data loader processes.")
    device: str = Field(
        default="auto", description="auto (a GPU when there is one, else the CPU), cpu, cuda:1, ..."
    )
    max_samples: int | None = Field(default=None, ge=1, description="Evaluate on a fixed random subset.")
    heatmaps: bool = Field(
        default=True,
        description="A deepfake detector's heatmaps on prepared crops: the report's gallery and, on fakes "
        "with a true mask, localisation and deletion figures beside a face prior and a random map.",
    )
    heatmap_samples: int = Field(
        default=300, ge=1, description="At most this many fakes are looked at for the heatmap figures."
    )
    gallery_size: int = Field(default=4, ge=0, description="Crops per gallery group (confident, wrong).")

    @field_validator("perturbations")
    @classmethod
    def _known_perturbations(cls, value: list[str]) -> list[str]:
        if value == ["all"]:
            return list(PERTURBATION_NAMES)
        unknown = sorted(set(value) - set(PERTURBATION_NAMES))
        if unknown:
            raise ValueError(
                f"unknown perturbation(s) {unknown}; choose from {sorted(PERTURBATION_NAMES)} or [all]"
            )
        return value


class PredictConfig(Section):
    models: list[Path] = Field(
        default_factory=list,
        description="Model artifacts (folders with model.json, or "
        "older best.pt files); several form an ensemble; default: <train.output_dir>/model.",
    )
    weights: list[float] | None = Field(default=None, description="Ensemble weights (default: equal).")
    inputs: list[Path] = Field(default_factory=list, description="Images, videos, folders or list files.")
    output: Path = Field(default=Path("output/predict/submission.csv"), description="The submission CSV.")
    format: Literal["label", "probability"] = Field(
        default="probability", description="probability (of fake), or label (at the threshold)."
    )
    label_names: tuple[str, str] = Field(
        default=("REAL", "FAKE"), description="The words a label submission uses."
    )
    id_column: str = Field(default="id", description="The submission's id column (e.g. filename).")
    details: Path | None = Field(default=None, description="Per-frame CSV or JSON (scores, boxes, timing).")
    aggregation: Literal["mean", "max", "topk", "confident"] = Field(
        default="mean",
        description="Frame scores -> one per video: mean, max, topk (mean of the top_k), confident (the "
        "mean of the confidently fake frames when enough are, else of the confidently real, else all).",
    )
    top_k: int = Field(default=3, ge=1, description="Frames the topk aggregation averages.")
    frames_per_video: int | None = Field(
        default=None, ge=1, description="Default: the model's (as in training)."
    )
    faces: dict[str, Any] = Field(
        default_factory=dict,
        description="Face settings that replace the model's (faces.* keys, e.g. {detector: retinaface}). A "
        "model trained on ready crops (faces.detect: false) detects faces in raw inputs unless detect: false "
        "is given.",
    )
    no_face_score: float = Field(default=0.5, ge=0, le=1, description="Score of a file with no usable face.")
    threshold: float | None = Field(
        default=None, ge=0, le=1, description="Default: the model's, fitted on validation."
    )
    batch_size: int = Field(default=32, ge=1, description="Crops per forward pass.")
    batch_across_files: bool = Field(
        default=True,
        description="Fill each batch with crops of consecutive files "
        "(false: a file's crops are scored on their own).",
    )
    num_workers: int = Field(
        default=2,
        ge=0,
        description="Processes decoding and detecting faces (while the "
        "main process scores crops; 0: all in the main process).",
    )
    backend: Literal["auto", "torch", "onnxruntime"] = Field(
        default="auto",
        description="What runs a deepfake detector's or classifier's network: auto = ONNX Runtime on CPU "
        "(checked against PyTorch when loaded; PyTorch if that fails), PyTorch on a GPU.",
    )
    device: str = Field(
        default="auto", description="auto (a GPU when there is one, else the CPU), cpu, cuda:1, ..."
    )
    heatmaps: bool = Field(
        default=False,
        description="Write a heatmap per file (per video: its `heatmap_frames` weightiest frames) to "
        "heatmaps/ beside the submission, PNG + overlay JPEG; the details file gains heatmap and regions.",
    )
    heatmap_frames: int = Field(
        default=3, ge=1, description="Heatmaps per video: the frames that weigh most."
    )
    heatmap_method: Literal["auto", "mask", "cam"] = Field(
        default="auto",
        description="auto: a detector's mask head where it has one, else a class-activation map (Grad-CAM).",
    )


# ---------------------------------------------------------------------------------------------
# model kinds: each registers the section it owns and the defaults it changes (fakefinder.tasks)

DEFAULT_TASK = "deepfake_detector"
_KIND_SECTIONS: dict[str, type[Section]] = {}  # section name -> its model, for every kind's own section
_KIND_DEFAULTS: dict[str, dict[str, Any]] = {}
_KIND_READS: dict[str, tuple[str, ...]] = {}  # kind -> the sections its configs hold, in order
SHARED_SECTIONS = ("data", "faces", "prepare", "model", "augment", "train", "evaluate", "predict")


def register_kind(
    kind: str,
    section: str | None = None,
    model: type[Section] | None = None,
    defaults: dict[str, Any] | None = None,
    reads: tuple[str, ...] = ("evaluate", "predict"),
) -> None:
    """Make `kind` a valid `task:`; `section: model` becomes its own config section, `reads` names the
    shared sections its configs hold besides it, and `defaults` (a nested mapping) replace those
    sections' defaults when a config names the kind."""
    unknown = sorted(set(reads) - set(SHARED_SECTIONS))
    if unknown:
        raise ValueError(f"kind {kind!r} reads unknown shared section(s) {unknown}")
    if section is not None:
        if section in SHARED_SECTIONS or section == "task":
            raise ValueError(f"config section {section!r} is shared; a kind cannot own it")
        _KIND_SECTIONS[section] = model
    _KIND_DEFAULTS[kind] = dict(defaults or {})
    _KIND_READS[kind] = (*[s for s in SHARED_SECTIONS if s in reads], *([section] if section else []))


def unregister_kind(kind: str, section: str | None = None) -> None:
    """Undo `register_kind` (a section that another kind still owns stays)."""
    _KIND_DEFAULTS.pop(kind, None)
    _KIND_READS.pop(kind, None)
    if section is not None:
        _KIND_SECTIONS.pop(section, None)


def known_kinds() -> list[str]:
    return sorted(_KIND_DEFAULTS)


def sections_of(kind: str) -> tuple[str, ...]:
    """The sections a config of `kind` holds (all of them for a kind nobody registered)."""
    return _KIND_READS.get(kind, (*SHARED_SECTIONS, *_KIND_SECTIONS))


def _own_section(kind: str) -> str | None:
    return next((s for s in sections_of(kind) if s in _KIND_SECTIONS), None)


def _merge_defaults(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    merged = dict(given)
    for key, value in defaults.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge_defaults(value, merged[key])
        elif key not in merged or merged[key] is None and isinstance(value, dict):
            merged[key] = value
    return merged


class Config(Section):
    """A whole run: `task` (the model kind) and the sections that kind reads: shared ones (`train`,
    `evaluate`, ...) and its own (e.g. `dx_llava`), which reads like the others
    (`config.dx_llava.train.lr`). Unknown keys anywhere are errors; renamed keys are taken under their
    new name, with a note (`notes`); a section the kind does not read is left out, with a note. Dumps
    and saved files hold `task` and the kind's sections only.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    task: str = Field(
        default=DEFAULT_TASK,
        description="The model kind: deepfake_detector, image_classifier, "
        "dx_llava, llm_lora, llm_qlora, object_detector, text_to_image_lora.",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    faces: FacesConfig = Field(default_factory=FacesConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    predict: PredictConfig = Field(default_factory=PredictConfig)
    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """What reading it noted: renamed keys taken under their new name, sections left out."""
        return list(self._notes)

    def sections(self) -> tuple[str, ...]:
        return sections_of(self.task)

    def model_dump(self, **kwargs) -> dict[str, Any]:
        if "include" not in kwargs and "exclude" not in kwargs:
            kwargs["include"] = {"task", *self.sections()}
        return super().model_dump(**kwargs)

    @model_validator(mode="wrap")
    @classmethod
    def _kind_sections(cls, data: Any, handler):
        """Renamed keys moved to their new names; the kind's own section validated (its errors keep
        their full key); unknown top-level keys refused; sections the kind does not read left out;
        the kind's defaults fill what the config leaves out."""
        if not isinstance(data, dict):
            return handler(data)
        errors: list[dict] = []
        data = copy.deepcopy(data)
        notes = migrate(data)
        task = data.get("task", DEFAULT_TASK)
        if not isinstance(task, str) or (_KIND_DEFAULTS and task not in _KIND_DEFAULTS):
            errors.append(
                {
                    "type": "value_error",
                    "loc": ("task",),
                    "input": task,
                    "ctx": {"error": f"unknown task {task!r}; known kinds: {', '.join(known_kinds())}"},
                }
            )
            task = None
        else:
            data = _merge_defaults(_KIND_DEFAULTS.get(task, {}), data)
        held = sections_of(task) if task else ()
        for key in list(data):
            if key == "task" or key.startswith("_"):
                continue
            if key not in cls.model_fields and key not in _KIND_SECTIONS:
                errors.append({"type": "extra_forbidden", "loc": (key,), "input": data[key]})
            elif task and key not in held:
                notes.append(f"section '{key}' is left out: {task} configs do not read it")
                del data[key]
        own = _own_section(task) if task else None
        if own is not None and not isinstance(data.get(own), _KIND_SECTIONS[own]):
            try:
                data[own] = _KIND_SECTIONS[own].model_validate(data.get(own) or {})
            except ValidationError as exc:
                errors += [{**_line(e), "loc": (own, *e["loc"])} for e in exc.errors()]
        try:
            result = handler({k: v for k, v in data.items() if k in cls.model_fields or k == own})
        except ValidationError as exc:
            errors = [_line(e) for e in exc.errors()] + errors
            result = None
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        result._notes = notes
        return result

    def __setattr__(self, name: str, value: Any) -> None:
        """Assignments are checked like a file: a kind's section is validated (errors name it), an
        unknown section or `task` is an error."""
        model = _KIND_SECTIONS.get(name)
        if model is not None and not isinstance(value, model):
            try:
                value = model.model_validate(value)
            except ValidationError as exc:
                lines = [f"  {name}.{_format_loc(e['loc'])}: {e['msg']}" for e in exc.errors()]
                raise ConfigError("invalid configuration (assignment):\n" + "\n".join(lines)) from None
        elif model is None and name not in type(self).model_fields and not name.startswith("_"):
            raise ConfigError(
                f"unknown config section '{name}' (known: "
                f"{', '.join([*type(self).model_fields, *_KIND_SECTIONS])})"
            )
        if name == "task" and _KIND_DEFAULTS and value not in _KIND_DEFAULTS:
            raise ConfigError(f"unknown task {value!r}; known kinds: {', '.join(known_kinds())}")
        super().__setattr__(name, value)

    @model_validator(mode="after")
    def _mask_head_for_mask_loss(self) -> "Config":
        if self.train.mask_loss > 0:
            self.model.mask_head = True  # the resolved config (and checkpoint) records the head
        return self


def _line(error: dict) -> dict:
    """A pydantic error entry in the form `ValidationError.from_exception_data` takes back."""
    line = {"type": error["type"], "loc": tuple(error["loc"]), "input": error.get("input")}
    if error["type"] not in _BUILT_IN_ERRORS:  # e.g. path_type: only pydantic-core's own types go back in
        line["type"] = PydanticCustomError(error["type"], "{reason}", {"reason": error["msg"]})
        return line
    if error.get("ctx"):
        line["ctx"] = {k: (str(v) if isinstance(v, Exception) else v) for k, v in error["ctx"].items()}
    return line


_BUILT_IN_ERRORS = frozenset(typing.get_args(core_schema.ErrorType))


# ---------------------------------------------------------------------------------------------
# loading and overrides


def _format_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names valid at `loc` (for did-you-mean hints); empty when the path is not a model."""
    if model is Config and not loc:
        return [*Config.model_fields, *_KIND_SECTIONS]
    current: Any = model
    if model is Config and loc and loc[0] in _KIND_SECTIONS:
        current, loc = _KIND_SECTIONS[loc[0]], loc[1:]
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _inner_model(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        inner = getattr(candidate, "__args__", ())
        for sub in inner:
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                return sub
    return annotation


# ---------------------------------------------------------------------------------------------
# renamed keys: an older config, artifact, resume state or stored job keeps working


def _dtype_name(value: Any) -> Any:
    return {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}.get(value, value)


def _tracker_list(value: Any) -> Any:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if v != "none"]


def _tensorboard_flag(section: str):
    def apply(tree: dict, value: Any) -> None:
        trackers = [t for t in _get(tree, f"{section}.trackers", ["tensorboard"]) if t != "tensorboard"]
        _put(tree, f"{section}.trackers", (["tensorboard"] if value else []) + trackers)

    return apply


def _wandb_project(section: str):
    def apply(tree: dict, value: Any) -> None:
        _put(tree, f"{section}.tracker_project", value)
        trackers = list(_get(tree, f"{section}.trackers", ["tensorboard"]))
        if value and "wandb" not in trackers:
            _put(tree, f"{section}.trackers", [*trackers, "wandb"])

    return apply


def _random_part(section: str, base_key: str, part: str):
    """An older random model given as a whole config (`llm.model.base_config: {...}`): today the base
    is `random:tiny` and the config its `random_config` part (null: nothing was random)."""

    def apply(tree: dict, value: Any) -> None:
        if value is None:
            return
        _put(tree, f"{section}.{base_key}", "random:tiny")
        _put(tree, f"{section}.random_config.{part}", value)

    return apply


class Renamed:
    """Where an old key went (`new`), with its value converted (`convert`) or merged into the tree by
    `apply(tree, value)` when it is not a plain move."""

    def __init__(self, new: str, convert=None, apply=None) -> None:
        self.new, self.convert, self.apply = new, convert, apply


RENAMED_KEYS: dict[str, Renamed] = {
    "predict.checkpoints": Renamed("predict.models"),
    "evaluate.checkpoints": Renamed("evaluate.models"),
    "train.save_every_steps": Renamed("train.save_steps"),
    "train.logging.log_every_steps": Renamed("train.logging_steps"),
    "train.logging.plots": Renamed("train.plots"),
    "train.logging.tensorboard": Renamed("train.trackers", apply=_tensorboard_flag("train")),
    "train.logging.wandb_project": Renamed("train.tracker_project", apply=_wandb_project("train")),
    "train.logging.wandb_entity": Renamed("train.tracker_entity"),
    "llm.lora.lora_r": Renamed("llm.lora.r"),
    "llm.lora.lora_alpha": Renamed("llm.lora.alpha"),
    "llm.lora.lora_dropout": Renamed("llm.lora.dropout"),
    "llm.lora.bnb_4bit_compute_dtype": Renamed("llm.lora.compute_dtype", _dtype_name),
    "llm.lora.bnb_4bit_quant_type": Renamed("llm.lora.quant_type"),
    "llm.lora.use_nested_quant": Renamed("llm.lora.double_quant"),
    "llm.train.report_to": Renamed("llm.train.trackers", _tracker_list),
    "dx_llava.train.lora_r": Renamed("dx_llava.lora.r"),
    "dx_llava.train.lora_alpha": Renamed("dx_llava.lora.alpha"),
    "dx_llava.train.lora_dropout": Renamed("dx_llava.lora.dropout"),
    "dx_llava.train.lora_target_modules": Renamed("dx_llava.lora.target_modules"),
    "dx_llava.train.quant_type": Renamed("dx_llava.lora.quant_type"),
    "dx_llava.train.double_quant": Renamed("dx_llava.lora.double_quant"),
    "dx_llava.train.compute_dtype": Renamed("dx_llava.lora.compute_dtype"),
    "dx_llava.train.report_to": Renamed("dx_llava.train.trackers", _tracker_list),
    "llm.model.base_config": Renamed(
        "llm.model.random_config", apply=_random_part("llm.model", "base", "language_model")
    ),
    "dx_llava.model.language_model_config": Renamed(
        "dx_llava.model.random_config",
        apply=_random_part("dx_llava.model", "language_model", "language_model"),
    ),
    "dx_llava.model.vision_config": Renamed(
        "dx_llava.model.random_config", apply=_random_part("dx_llava.model", "vision_tower", "vision_tower")
    ),
    "detector.train.batch": Renamed("object_detector.train.batch_size"),
    "detector.train.lr0": Renamed("object_detector.train.lr"),
    "detector.train.workers": Renamed("object_detector.train.num_workers"),
    "diffusion.lora.rank": Renamed("diffusion.lora.r"),
    "diffusion.train.checkpoint_steps": Renamed("diffusion.train.save_steps"),
    "diffusion.train.checkpoints_kept": Renamed("diffusion.train.save_total_limit"),
    "diffusion.sample.every": Renamed("diffusion.train.eval_steps"),
}
# whole sections renamed: what is left under the old name after the keys above moves to the new one
RENAMED_SECTIONS: dict[str, str] = {"detector": "object_detector"}
_MISSING = object()


def _get(tree: dict, dotted: str, default: Any = None) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _put(tree: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = tree
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def _pop(tree: dict, dotted: str) -> Any:
    """The value at `dotted` removed from the tree (parents it leaves empty go too), or _MISSING."""
    *parents, last = dotted.split(".")
    path, node = [], tree
    for part in parents:
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return _MISSING
        path.append((node, part))
        node = node[part]
    if not isinstance(node, dict) or last not in node:
        return _MISSING
    value = node.pop(last)
    for parent, part in reversed(path):
        if parent[part] == {}:
            del parent[part]
    return value


def migrate(tree: dict, prefix: str = "") -> list[str]:
    """Renamed keys and sections of a config tree (in place) moved to their new names; one note per
    key. With `prefix` (e.g. "llm"), `tree` is that section alone (saved under its name of today or
    an earlier one)."""
    notes = []
    whole = {prefix: tree} if prefix else tree
    for old, renamed in RENAMED_KEYS.items():
        head, _, rest = old.partition(".")
        where = old
        if prefix and head != prefix:
            if RENAMED_SECTIONS.get(head) != prefix:
                continue
            where = f"{prefix}.{rest}"  # a saved section of the old name, given as today's
        value = _pop(whole, where)
        if value is _MISSING:
            continue
        if renamed.apply is not None:
            renamed.apply(whole, value)
            if value is None:  # an older key left unset: nothing moved, nothing to note
                continue
        elif _get(whole, renamed.new, _MISSING) is not _MISSING:
            notes.append(f"'{old}' and '{renamed.new}' are both given: '{renamed.new}' is used")
            continue
        else:
            _put(whole, renamed.new, renamed.convert(value) if renamed.convert else value)
        notes.append(f"'{old}' is called '{renamed.new}' now")
    if not prefix:
        for old, new in RENAMED_SECTIONS.items():
            if isinstance(whole.get(old), dict):
                moved = whole.pop(old)
                kept = whole.setdefault(new, {}) if isinstance(whole.get(new, {}), dict) else None
                clashes = _merge_missing(moved, kept, new) if kept is not None else [new]
                notes.append(f"section '{old}' is called '{new}' now")
                notes += [
                    f"'{old}{key[len(new) :]}' and '{key}' are both given: '{key}' is used" for key in clashes
                ]
    if prefix and whole.get(prefix) is not tree:  # the section itself was replaced or emptied
        moved = whole.get(prefix) or {}
        tree.clear()
        tree.update(moved)
    return notes


def earlier_names(dotted: str) -> list[str]:
    """`dotted` and the same key under the earlier names of its section."""
    head, _, rest = dotted.partition(".")
    return [dotted, *(f"{old}.{rest}" for old, new in RENAMED_SECTIONS.items() if new == head and rest)]


def _merge_missing(source: dict, target: dict, where: str) -> list[str]:
    """`source`'s keys added to `target` where it lacks them; the dotted keys both hold, returned."""
    clashes = []
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            clashes += _merge_missing(value, target[key], f"{where}.{key}")
        elif key in target:
            clashes.append(f"{where}.{key}")
        else:
            target[key] = value
    return clashes


def renamed_flat(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys (as a run's settings fingerprint records them) under their current names."""
    out = {}
    for key, value in values.items():
        renamed = RENAMED_KEYS.get(key)
        head, _, rest = key.partition(".")
        if renamed is not None and renamed.apply is None:
            out[renamed.new] = renamed.convert(value) if renamed.convert else value
        elif renamed is None and head in RENAMED_SECTIONS and rest:
            out[f"{RENAMED_SECTIONS[head]}.{rest}"] = value
        else:
            out[key] = value
    return out


def _explain(error: ValidationError, source: str) -> ConfigError:
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors():
        loc = item["loc"]
        key = _format_loc(loc)
        if item["type"] == "extra_forbidden":
            known = _known_keys(Config, loc[:-1])
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
            suggestion = f" (did you mean '{_format_loc((*loc[:-1], hint[0]))}'?)" if hint else ""
            lines.append(f"  unknown key '{key}'{suggestion}")
        else:
            lines.append(f"  {key}: {item['msg']}")
    return ConfigError("\n".join(lines))


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """`a.b.0.c=value` -> (['a', 'b', 0, 'c'], parsed value); values are read as YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key part")
    path: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".")]
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc})") from exc
    return path, value


def _apply_override(tree: dict[str, Any], path: list[str | int], value: Any, text: str) -> None:
    node: Any = tree
    for depth, part in enumerate(path[:-1]):
        nxt = path[depth + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                where = _format_loc(tuple(path[: depth + 1]))
                raise ConfigError(f"override {text!r}: no list item '{where}'")
            node = node[part]
            continue
        if part not in node or node[part] is None:
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last > len(node):
            raise ConfigError(f"override {text!r}: no list item '{_format_loc(tuple(path))}'")
        if last == len(node):
            node.append(value)
        else:
            node[last] = value
    else:
        if not isinstance(node, dict):
            raise ConfigError(f"override {text!r}: '{_format_loc(tuple(path[:-1]))}' is not a section")
        node[last] = value


def set_key(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted `key` (`train.lr`, `data.datasets.0.root`) in a config tree, as an override would."""
    path, _ = parse_override(f"{key}=")
    _apply_override(tree, path, value, f"{key}={value!r}")


def read_yaml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return tree


def _resolve_relative_paths(tree: dict[str, Any], base: Path) -> None:
    """Dataset roots written relative to a config file are relative to that file (outputs stay
    relative to the working directory)."""
    for dataset in (tree.get("data") or {}).get("datasets") or []:
        if isinstance(dataset, dict) and isinstance(dataset.get("root"), str):
            root = Path(dataset["root"]).expanduser()
            if not root.is_absolute():
                dataset["root"] = str((base / root).resolve())


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (optional), apply `key.sub=value` overrides, validate."""
    return config_from_dict(*read_config_tree(path, overrides))


def read_config_tree(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[dict[str, Any], str]:
    """A YAML config's tree (relative paths made absolute from its folder) with `key.sub=value`
    overrides applied, not yet validated, and where it came from (for errors)."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        tree = read_yaml(Path(path))
        _resolve_relative_paths(tree, Path(path).resolve().parent)
        source = str(path)
    for text in overrides:
        key_path, value = parse_override(text)
        _apply_override(tree, key_path, value, text)
    if overrides:
        source += " + overrides " + " ".join(overrides)
    return tree, source


def config_from_dict(tree: dict[str, Any], source: str = "dict") -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise _explain(exc, source) from None


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: Config, path: Path) -> Path:
    from fakefinder.core.files import atomic_write_text

    return atomic_write_text(Path(path), config_to_yaml(config))


def section_from_saved(
    model: type[Section], saved: dict[str, Any], where: str, prefix: str = ""
) -> tuple[Section, list[str]]:
    """A section rebuilt from settings a file saved (an artifact's face settings, a DX-LLaVA model's
    sections): keys renamed since are read under their new names (`prefix`: the section's name in a
    config, e.g. "llm"); keys this version does not know (dropped since) are left out, at any depth,
    and returned, so an older file still loads. A renamed key is logged with its new name."""
    saved = copy.deepcopy(dict(saved or {}))
    for note in migrate(saved, prefix) if prefix else ():
        log.warning("%s (written by an earlier version): %s", where, note)
    kept, ignored = _known_part(model, saved, "")
    try:
        return model.model_validate(kept), ignored
    except ValidationError as exc:
        raise _explain(exc, where) from None


def _known_part(model: type[Section], saved: dict[str, Any], prefix: str) -> tuple[dict[str, Any], list[str]]:
    kept, ignored = {}, []
    for key, value in saved.items():
        field = model.model_fields.get(key)
        if field is None:
            ignored.append(prefix + key)
            continue
        inner = _inner_model(field.annotation)
        if isinstance(value, dict) and isinstance(inner, type) and issubclass(inner, Section):
            value, deeper = _known_part(inner, value, f"{prefix}{key}.")
            ignored += deeper
        kept[key] = value
    return kept, sorted(ignored)
