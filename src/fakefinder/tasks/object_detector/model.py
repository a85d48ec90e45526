"""The glue to Ultralytics YOLO (AGPL-3.0, an optional extra): models built from their YAML, weights
read without unpickling code, and a trainer whose checkpoints are safetensors and JSON.

Ultralytics' own checkpoints (`last.pt`, `best.pt`) pickle the whole model; this trainer writes
none. Its resume checkpoint (`checkpoints/last/`) holds the live model and its EMA in safetensors,
the optimizer state as a tensors-only file read back weights-only, and the epoch, fitness, early
stopping and RNG states in plain files. An official `.pt` given as starting weights is read with
torch's weights-only loader, which admits model layer classes and tensors and refuses anything else.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import os
import pkgutil
import shutil
import threading
from pathlib import Path

import torch
import yaml

from fakefinder.config import ConfigError
from fakefinder.engine.tiny import is_random

INSTALL = (
    "the object_detector kind needs Ultralytics (AGPL-3.0): pip install --no-deps ultralytics "
    "ultralytics-thop polars (see docs/kinds/object-detector.md)"
)
CHECKPOINT = "checkpoints"


def require():
    """Import Ultralytics, or say how to install it. Its import would patch process-wide functions
    (PIL's Image.open, to pip-install a HEIF plugin on the first unreadable image; torch.save): they
    are put back, and its run-time package installs are switched off."""
    import sys

    if "ultralytics.utils" in sys.modules:
        return
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    # model YAMLs and checkpoints are built without eval(): only known layer classes, activations parsed
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
    from PIL import Image

    image_open, torch_save = Image.open, torch.save
    try:
        import ultralytics.utils  # noqa: F401  (imported for its settings, with the hooks above in place)
    except ImportError:
        raise ConfigError(INSTALL) from None
    finally:
        Image.open, torch.save = image_open, torch_save


def version() -> str:
    import ultralytics

    return ultralytics.__version__


# ---------------------------------------------------------------------------------------------
# models


def _layer_classes() -> dict[str, type]:
    """The module classes a model YAML may name (Ultralytics' layers; not its whole-model classes)."""
    import ultralytics.nn.modules as layers

    found = {}
    modules = [layers] + [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(layers.__path__, layers.__name__ + ".")
    ]
    for module in modules:
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, torch.nn.Module):
                found[name] = cls
    return found


TINY_LAYOUT = "yolov8n.yaml"  # what `random:tiny` scales down


def model_yaml(arch: str) -> dict:
    """The model description of `arch`: a YAML file, or a name Ultralytics ships (yolov8n.yaml). Every
    layer it names must be a model layer class (a YAML names classes; it cannot call a function)."""
    require()
    from ultralytics.nn.tasks import guess_model_scale, yaml_model_load

    path = Path(arch)
    if is_random(arch):  # YOLOv8's layout at half the width of its n scale, random weights
        spec = yaml_model_load(TINY_LAYOUT)
        spec["scales"] = {"n": [0.33, 0.125, 256]}
    elif path.is_file():
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(
                f"object_detector.model.arch: {path} is not a readable YAML file ({exc})"
            ) from None
        if not isinstance(spec, dict):
            raise ConfigError(f"object_detector.model.arch: {path} is not a model YAML (backbone, head)")
        spec["scale"] = guess_model_scale(path)
        spec["yaml_file"] = str(path)
    else:
        if path.suffix not in (".yaml", ".yml"):
            raise ConfigError(
                f"object_detector.model.arch: {arch!r} is neither a model YAML file nor the name of one "
                "(yolov8n.yaml, yolo11n.yaml, ...)"
            )
        try:
            spec = yaml_model_load(arch)
        except (FileNotFoundError, OSError, AssertionError) as exc:
            raise ConfigError(
                f"object_detector.model.arch: {arch!r} is not a model YAML Ultralytics ships ({exc})"
            ) from None
    check_layers(spec, f"object_detector.model.arch ({arch})")
    return spec


def check_layers(spec: dict, where: str) -> None:
    import re

    allowed = _layer_classes()
    act = spec.get("activation")
    if act is not None and not (
        isinstance(act, str)
        and re.fullmatch(r"nn\.[A-Za-z0-9_]+\([0-9.,=\sA-Za-z_]*\)", act)
        and isinstance(getattr(torch.nn, act[3:].split("(")[0], None), type)
    ):
        raise ConfigError(f"{where}: activation {act!r} is not a torch.nn activation such as nn.SiLU()")
    for part in ("backbone", "head"):
        rows = spec.get(part)
        if not isinstance(rows, list):
            raise ConfigError(f"{where}: `{part}` must be a list of [from, repeats, module, args] rows")
        for index, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != 4 or not isinstance(row[2], str):
                raise ConfigError(f"{where}: {part}[{index}] is not a [from, repeats, module, args] row")
            name = row[2]
            ok = (
                name.startswith("nn.")
                and isinstance(getattr(torch.nn, name[3:], None), type)
                or name in allowed
            )
            if not ok:
                raise ConfigError(
                    f"{where}: {part}[{index}] names {name!r}, which is not a model layer class"
                )


def build(spec: dict, names: list[str]):
    """A DetectionModel for these classes (random weights)."""
    require()
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(copy.deepcopy(spec), ch=3, nc=len(names), verbose=False)
    model.names = dict(enumerate(names))
    return model


def _pt_globals() -> list:
    import types

    import torch.nn.modules as nn_modules
    import ultralytics.nn.tasks as tasks
    from ultralytics.utils import IterableSimpleNamespace

    classes = set(_layer_classes().values())
    # the whole-model classes a checkpoint pickles (rebuilt under Ultralytics' safe load: no eval)
    classes.update(c for _, c in inspect.getmembers(tasks, inspect.isclass) if issubclass(c, torch.nn.Module))
    for info in pkgutil.walk_packages(nn_modules.__path__, nn_modules.__name__ + "."):
        module = importlib.import_module(info.name)
        classes.update(
            c for _, c in inspect.getmembers(module, inspect.isclass) if issubclass(c, torch.nn.Module)
        )
    return [*classes, IterableSimpleNamespace, types.SimpleNamespace]


def read_pt(path: Path) -> dict[str, torch.Tensor]:
    """The weights of an Ultralytics `.pt` (its EMA, else its model), read weights-only: the pickle may
    rebuild model layers and tensors; anything else (a function, a command) is refused unrun."""
    import pickle

    from fakefinder.core.checkpoint import plain_array_globals

    require()
    try:
        with torch.serialization.safe_globals([*_pt_globals(), *plain_array_globals()]):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            f"refused to load {path}: it holds objects other than model layers and tensors "
            f"({str(exc).splitlines()[0][:200]}); fakefinder never unpickles code"
        ) from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    model = saved.get("ema") or saved.get("model") if isinstance(saved, dict) else None
    if model is None or not hasattr(model, "state_dict"):
        raise ConfigError(f"{path} is not an Ultralytics checkpoint (no model or ema in it)")
    return {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}


def start_weights(source: str) -> dict[str, torch.Tensor]:
    """The tensors of `object_detector.model.weights`: an object_detector artifact, a .safetensors file, an
    Ultralytics .pt, or an official weights name (downloaded by Ultralytics when online)."""
    from safetensors.torch import load_file

    from fakefinder.core.artifact import is_artifact

    path = Path(source)
    if is_artifact(path):
        from fakefinder.core.artifact import read_artifact

        artifact = read_artifact(path)
        if artifact.kind != "object_detector":
            raise ConfigError(
                f"object_detector.model.weights: {path} holds a {artifact.kind} model, not an object_detector"
            )
        return artifact.weights()
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ConfigError(f"object_detector.model.weights: {path} does not exist")
        return load_file(str(path))
    if path.suffix == ".pt":
        if not path.is_file():
            if path.parent != Path("."):
                raise ConfigError(f"object_detector.model.weights: {path} does not exist")
            require()
            from ultralytics.utils.downloads import attempt_download_asset

            try:
                path = Path(attempt_download_asset(str(path)))
            except Exception as exc:  # noqa: BLE001 - offline, or not a released name
                raise ConfigError(
                    f"object_detector.model.weights: {source!r} is not a local file and could not be "
                    f"downloaded ({type(exc).__name__}: {exc})"
                ) from None
            if not path.is_file():
                raise ConfigError(f"object_detector.model.weights: {source!r} could not be downloaded")
        return read_pt(path)
    raise ConfigError(
        f"object_detector.model.weights: {source!r} is not an artifact folder, a .safetensors or a .pt file"
    )


def load_matching(model, weights: dict[str, torch.Tensor]) -> tuple[int, int]:
    """The tensors of `weights` whose name and shape match the model's (a head for other classes is
    left as built); (loaded, total)."""
    own = model.state_dict()
    matching = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matching, strict=False)
    return len(matching), len(own)


# ---------------------------------------------------------------------------------------------
# checkpoints


def _state_dict(module) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().float().contiguous().cpu() if v.is_floating_point() else v.detach().contiguous().cpu()
        for k, v in module.state_dict().items()
    }


def write_checkpoint(folder: Path, parts: dict) -> None:
    """`folder` written whole (a sibling staged then swapped in): a kill leaves the old one or the new."""
    from safetensors.torch import save_file

    from fakefinder.core.checkpoint import save_checkpoint

    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(parts["model"], str(staging / "model.safetensors"))
    save_file(parts["ema"], str(staging / "ema.safetensors"))
    save_checkpoint(
        staging / "optimizer.pt",
        {
            "optimizer": parts["optimizer"],
            "scaler": parts["scaler"],
            "rng": parts["rng"],
            "loader": parts["loader"],
        },
    )
    (staging / "state.json").write_text(json.dumps(parts["state"], indent=1, default=float))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def read_checkpoint(folder: Path) -> dict:
    from safetensors.torch import load_file

    from fakefinder.core.checkpoint import load_checkpoint

    folder = Path(folder)
    if not (folder / "state.json").is_file():
        raise ConfigError(f"resume: {folder} is not a complete checkpoint (no state.json)")
    tensors = load_checkpoint(folder / "optimizer.pt")
    return {
        "model": load_file(str(folder / "model.safetensors")),
        "ema": load_file(str(folder / "ema.safetensors")),
        **tensors,
        "state": json.loads((folder / "state.json").read_text()),
    }


def latest(output: Path) -> Path | None:
    """The resume checkpoint of a run folder (None: there is none); a `.partial` one a kill cut off
    never counts, and a `.old` one a kill left mid-swap is the last complete one."""
    for name in ("last", "last.old"):
        folder = Path(output) / CHECKPOINT / name
        if (folder / "state.json").is_file():
            return folder
    return None


# ---------------------------------------------------------------------------------------------
# the trainer


def trainer_class(
    spec: dict,
    data: dict,
    output: Path,
    start: dict | None,
    resume: dict | None,
    events,
    stop: threading.Event,
):
    """A DetectionTrainer that reads the staged dataset, builds the model from `spec` (with `start`
    weights), resumes from `resume` (a read checkpoint), writes safe checkpoints, reports epochs and
    batches as events, and stops between batches when `stop` is set (the last complete epoch is
    what a resume continues from)."""
    require()
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils.torch_utils import ModelEMA, unwrap_model

    from fakefinder.core.checkpoint import rng_state, set_rng_state

    class Trainer(DetectionTrainer):
        interrupted = False

        def check_resume(self, overrides):
            self.resume = resume is not None
            self.args.resume = self.resume

        def get_dataset(self):
            return dict(data)

        def get_model(self, cfg=None, weights=None, verbose=True):
            model = build(spec, [data["names"][i] for i in range(data["nc"])])
            if start is not None:
                loaded, total = load_matching(model, start)
                events.log(f"start weights: {loaded} of {total} tensors match the model", "train")
            return model

        def setup_model(self):
            self.model = self.get_model()
            if resume is None:
                return None
            self.model.load_state_dict(resume["model"])
            return {"epoch": resume["state"]["epoch"]}

        def _load_checkpoint_state(self, ckpt):
            state = resume["state"]
            for saved, group in zip(resume["optimizer"]["param_groups"], self.optimizer.param_groups):
                saved["fused"] = group.get("fused")
            self.optimizer.load_state_dict(resume["optimizer"])
            if resume.get("scaler"):
                self.scaler.load_state_dict(resume["scaler"])
            self.ema = ModelEMA(self.model)
            self.ema.ema.load_state_dict(resume["ema"])
            self.ema.updates = state["updates"]
            self.best_fitness = state["best_fitness"]
            self.stopper.best_fitness = state["stopper"]["best_fitness"]
            self.stopper.best_epoch = state["stopper"]["best_epoch"]
            _trim_results(self.csv, state["epoch"] + 1)
            # the epoch's order drawn from the generator state saved here (as an unbroken run draws it
            # with workers=0; with worker processes the iterator's seeds differ)
            self.train_loader.iterator = self.train_loader._get_iterator()
            self.train_loader.generator.set_state(resume["loader"])
            set_rng_state(resume["rng"])

        def _handle_nan_recovery(self, epoch):
            loss_nan = self.loss is not None and not self.loss.isfinite()
            fitness_nan = self.fitness is not None and not bool(torch.isfinite(torch.tensor(self.fitness)))
            if not (loss_nan or fitness_nan) or epoch == self.start_epoch:
                return False
            raise RuntimeError(
                f"{'loss' if loss_nan else 'fitness'} is NaN/Inf at epoch {epoch + 1}; resume from the last "
                f"checkpoint ({output / CHECKPOINT / 'last'}) with a lower object_detector.train.lr"
            )

        def validate(self):
            if self.interrupted:  # a cut-off epoch is neither validated nor saved
                return self.metrics, self.fitness
            return super().validate()

        def save_metrics(self, metrics):
            if not self.interrupted:
                super().save_metrics(metrics)

        def save_model(self):
            if self.interrupted:
                return False
            ema = unwrap_model(self.ema.ema)
            if self.best_fitness == self.fitness:  # best first: `last` never names a best that is not on disk
                from safetensors.torch import save_file

                from fakefinder.core.files import atomic_write_json

                best = output / CHECKPOINT / "best.safetensors"
                best.parent.mkdir(parents=True, exist_ok=True)
                save_file(_state_dict(ema), str(best.with_suffix(".partial")))
                os.replace(best.with_suffix(".partial"), best)
                atomic_write_json(
                    output / CHECKPOINT / "best.json",
                    {
                        "epoch": self.epoch + 1,
                        "fitness": _plain(self.fitness),
                        "metrics": {k: _plain(v) for k, v in (self.metrics or {}).items()},
                    },
                )
            write_checkpoint(
                output / CHECKPOINT / "last",
                {
                    "model": _state_dict(unwrap_model(self.model)),
                    "ema": _state_dict(ema),
                    "optimizer": self.optimizer.state_dict(),
                    "scaler": self.scaler.state_dict(),
                    "rng": rng_state(),
                    "loader": self.train_loader.generator.get_state(),
                    "state": {
                        "epoch": self.epoch,
                        "epochs": self.epochs,
                        "best_fitness": _plain(self.best_fitness),
                        "fitness": _plain(self.fitness),
                        "updates": self.ema.updates,
                        "finished": bool(self.stop),  # the last epoch, or early stopping
                        "stopper": {
                            "best_fitness": _plain(self.stopper.best_fitness),
                            "best_epoch": self.stopper.best_epoch,
                        },
                        "metrics": {k: _plain(v) for k, v in (self.metrics or {}).items()},
                    },
                },
            )
            return True

        def run_callbacks(self, event: str):
            for callback in own_callbacks(self.callbacks.get(event, [])):
                callback(self)

        def _setup_train(self):
            import ultralytics.engine.trainer as engine

            check = engine.check_amp
            engine.check_amp = lambda model: True  # its check downloads and unpickles a reference model
            try:
                return super()._setup_train()
            finally:
                engine.check_amp = check

        def final_eval(self):
            pass  # fakefinder validates the best weights itself, from the safe files

    return Trainer


def _plain(value):
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _trim_results(csv: Path, keep_through: int) -> None:
    """results.csv without the rows of epochs after the checkpoint (a kill between the row and the
    checkpoint would otherwise leave one twice)."""
    if not csv.is_file():
        return
    lines = csv.read_text().splitlines()
    kept = lines[:1] + [line for line in lines[1:] if line and float(line.split(",")[0]) <= keep_through]
    csv.write_text("".join(line + "\n" for line in kept))


def own_callbacks(functions: list) -> list:
    """Ultralytics' callbacks without its integrations (analytics, its cloud platform, Ray Tune,
    loggers): progress goes to fakefinder's events."""
    return [
        f
        for f in functions
        if not getattr(f, "__module__", "").startswith(
            ("ultralytics.utils.callbacks.", "ultralytics.utils.events")
        )
        or f.__module__ == "ultralytics.utils.callbacks.base"
    ]


def integration_callbacks(instance) -> None:
    """Remove the integrations from an Ultralytics trainer, validator or predictor."""
    for event, functions in instance.callbacks.items():
        instance.callbacks[event] = own_callbacks(functions)


def without_integrations(cls):
    """A subclass of an Ultralytics validator or predictor that never runs its integrations (they are
    added back at each call)."""

    class Own(cls):
        def run_callbacks(self, event: str):
            for callback in own_callbacks(self.callbacks.get(event, [])):
                callback(self)

    Own.__name__ = cls.__name__
    return Own


def yolo_device(device) -> str:
    """A torch device as Ultralytics names it: cpu, or the GPU's index."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return str(device.index or 0)
    return device.type
