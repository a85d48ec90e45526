"""Each kind's GPU path for a few steps on tiny offline models: pass / fail / skipped, step time and peak
GPU memory per check, in a few minutes. Run it on a CUDA machine:

    python benchmarks/gpu_check.py                 # every check, each in a process of its own
    python benchmarks/gpu_check.py --only qlora    # the checks whose name holds "qlora"
    python benchmarks/gpu_check.py --device cpu    # the same plumbing on the CPU (fp32, no CUDA-only check)

It needs torch and fakefinder; a check whose packages are missing (timm, transformers, peft,
bitsandbytes, deepspeed, diffusers, ultralytics, onnxruntime-gpu) says which and is skipped. Each check
runs in a subprocess with a time limit, so one that hangs or crashes the process costs only itself.
Writes benchmarks/results/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIMIT_S = 150  # one check's time limit


# ---------------------------------------------------------------------------------------------- tiny data


def _crops(root: Path) -> Path:
    from fakefinder import synthetic

    return synthetic.make_prepared_crops(root / "crops", groups=16, size=48)


def _detector_config(root: Path, device: str, **train):
    from fakefinder.config import config_from_dict

    return config_from_dict(
        {
            "model": {"name": "test_efficientnet", "image_size": 32},
            "train": {
                "manifest": str(_crops(root)),
                "output_dir": str(root / "run"),
                "epochs": 1,
                "batch_size": 4,
                "num_workers": 0,
                "lr": 1e-3,
                "warmup_epochs": 0.0,
                "trackers": [],
                "plots": False,
                "device": device,
                **train,
            },
        }
    )


def _steps_time(history: list[dict], steps: int) -> float | None:
    seconds = sum(r.get("epoch_seconds", 0.0) for r in history)
    return seconds / steps if steps else None


# ---------------------------------------------------------------------------------------------- the checks


def check_deepfake_detector(root: Path, device: str, precision: str, **train) -> dict:
    import fakefinder

    result = fakefinder.train(_detector_config(root, device, precision=precision, **train), overwrite=True)
    assert result.stopped == "completed" and result.artifact is not None, result.stopped
    return {"steps": result.steps, "step_s": _steps_time(result.history, result.steps)}


def check_deepfake_detector_bf16(root, device):
    return check_deepfake_detector(root, device, "bf16" if device == "cuda" else "fp32")


def check_deepfake_detector_fp16(root, device):  # the GradScaler path
    if device != "cuda":
        return {"skip": "fp16 needs CUDA"}
    return check_deepfake_detector(root, device, "fp16")


def check_deepfake_detector_compile(root, device):
    return check_deepfake_detector(root, device, "bf16" if device == "cuda" else "fp32", compile=True)


def check_deepfake_detector_deepspeed_zero2(root, device):
    import deepspeed  # noqa: F401  (skipped without it)

    return check_deepfake_detector(root, device, "bf16" if device == "cuda" else "fp32", deepspeed="zero2")


def check_image_classifier(root, device):
    import fakefinder
    from fakefinder import synthetic
    from fakefinder.config import config_from_dict

    data = synthetic.make_class_folders(root / "classes")
    config = config_from_dict(
        {
            "task": "image_classifier",
            "classifier": {"data_dir": str(data)},
            "model": {"name": "test_efficientnet", "pretrained": False, "image_size": 32},
            "train": {
                "output_dir": str(root / "run"),
                "epochs": 1,
                "batch_size": 4,
                "num_workers": 0,
                "trackers": [],
                "plots": False,
                "device": device,
                "precision": "auto",
            },
        }
    )
    result = fakefinder.train(config, overwrite=True)
    assert result.stopped == "completed"
    return {"steps": result.steps, "step_s": _steps_time(result.history, result.steps)}


def _tiny_llm(root: Path, device: str, kind: str, **lora):
    import fakefinder
    from fakefinder import synthetic
    from fakefinder.config import config_from_dict

    data = synthetic.make_instruction_set(root / "data", {"train": 16, "val": 4})
    config = config_from_dict(
        {
            "task": kind,
            "llm": {
                "model": {"base": "random:tiny"},
                "data": {
                    "train_file": str(data / "train.jsonl"),
                    "val_file": str(data / "val.jsonl"),
                    "max_length": 128,
                },
                "lora": {"r": 4, "alpha": 8, **lora},
                "train": {
                    "output_dir": str(root / "run"),
                    "max_steps": 4,
                    "batch_size": 4,
                    "accumulate": 1,
                    "lr": 0.01,
                    "save_steps": 4,
                    "eval_steps": 4,
                    "logging_steps": 1,
                    "trackers": [],
                    "device": device,
                },
                "eval": {"samples": 1, "max_new_tokens": 4},
            },
        }
    )
    started = time.perf_counter()
    result = fakefinder.train(config, overwrite=True)
    assert result.stopped == "completed" and result.artifact is not None
    return {"steps": result.steps, "step_s": (time.perf_counter() - started) / result.steps}


def check_llm_lora(root, device):
    return _tiny_llm(root, device, "llm_lora")


def check_llm_qlora_4bit(root, device):
    import bitsandbytes  # noqa: F401  (skipped without it)

    return _tiny_llm(root, device, "llm_qlora", compute_dtype="bf16" if device == "cuda" else "fp32")


def check_dx_llava_lora(root, device):
    import fakefinder
    from fakefinder import synthetic
    from fakefinder.config import config_from_dict

    data = synthetic.make_llava_set(root / "dx")
    config = config_from_dict(
        {
            "task": "dx_llava",
            "faces": {"detect": False, "size": 32},
            "dx_llava": {
                "model": {"language_model": "random:tiny", "vision_tower": "random:tiny"},
                "data": {"train_json": str(data / "train.json"), "image_folder": str(data / "images")},
                "lora": {"r": 4, "alpha": 8, "compute_dtype": "bf16" if device == "cuda" else "fp32"},
                "train": {
                    "output_dir": str(root / "run"),
                    "mode": "lora",
                    "max_steps": 4,
                    "batch_size": 4,
                    "save_steps": 4,
                    "eval_steps": 4,
                    "logging_steps": 1,
                    "num_workers": 0,
                    "trackers": [],
                    "device": device,
                },
            },
        }
    )
    started = time.perf_counter()
    result = fakefinder.train(config, overwrite=True)
    assert result.stopped == "completed" and result.artifact is not None
    return {"steps": result.steps, "step_s": (time.perf_counter() - started) / result.steps}


def check_text_to_image_lora_fp16(root, device):
    import diffusers  # noqa: F401  (skipped without it)

    import fakefinder
    from fakefinder import synthetic
    from fakefinder.config import config_from_dict

    data = synthetic.make_captioned_folder(root / "captions", count=8, size=40)
    config = config_from_dict(
        {
            "task": "text_to_image_lora",
            "diffusion": {
                "model": {"base": "random:tiny"},
                "data": {"path": str(data), "resolution": 32, "val_ratio": 0.25},
                "sample": {"steps": 2},
                "eval": {"timesteps": 2},
                "train": {
                    "output_dir": str(root / "run"),
                    "max_steps": 4,
                    "batch_size": 2,
                    "accumulate": 1,
                    "lr": 1e-3,
                    "save_steps": 4,
                    "eval_steps": 4,
                    "logging_steps": 1,
                    "trackers": [],
                    "device": device,
                    "precision": "fp16" if device == "cuda" else "fp32",
                },
            },
        }
    )
    result = fakefinder.train(config, overwrite=True)
    assert result.stopped == "completed" and result.artifact is not None
    return {"steps": result.steps, "step_s": result.seconds / result.steps}


def check_object_detector(root, device):
    import ultralytics  # noqa: F401  (skipped without it)

    import fakefinder
    from fakefinder import synthetic
    from fakefinder.config import config_from_dict

    data = synthetic.make_yolo_dataset(root / "shapes", {"train": 16, "val": 8}, size=64)
    config = config_from_dict(
        {
            "task": "object_detector",
            "detector": {
                "data": {"path": str(data)},
                "train": {
                    "output_dir": str(root / "run"),
                    "epochs": 1,
                    "imgsz": 64,
                    "batch_size": 8,
                    "nbs": 8,
                    "num_workers": 0,
                    "close_mosaic": 0,
                    "warmup_epochs": 0,
                    "trackers": [],
                    "device": device,
                    "augment": {"mosaic": 0.0},
                },
            },
        }
    )
    result = fakefinder.train(config, overwrite=True)
    assert result.stopped == "completed" and result.artifact is not None
    return {
        "steps": result.epochs,
        "step_s": result.seconds / max(1.0, result.epochs or 1.0),
        "unit": "epoch",
    }


def check_onnxruntime(root, device):
    import numpy as np
    import onnxruntime as ort

    import fakefinder
    from fakefinder.tasks import get_task

    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        return {"skip": f"onnxruntime has no {provider} (install onnxruntime-gpu)"}
    result = fakefinder.train(_detector_config(root, device, precision="fp32"), overwrite=True)
    onnx = get_task("deepfake_detector").export(result.artifact, root / "model.onnx").path
    session = ort.InferenceSession(str(onnx), providers=[provider])
    assert session.get_providers()[0] == provider, session.get_providers()
    batch = np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32)
    session.run(None, {"image": batch})
    started = time.perf_counter()
    for _ in range(20):
        session.run(None, {"image": batch})
    return {"steps": 20, "step_s": (time.perf_counter() - started) / 20, "unit": "batch of 8"}


CHECKS = {
    name[len("check_") :]: fn
    for name, fn in globals().items()
    if name.startswith("check_") and callable(fn) and name != "check_deepfake_detector"
}


# ---------------------------------------------------------------------------------------------- running them


def run_one(name: str, device: str) -> dict:
    """One check in this process: its figures, or why it failed or was skipped."""
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            found = CHECKS[name](Path(tmp), device)
        except ImportError as exc:
            if not (exc.name or "").startswith("fakefinder"):  # a package this machine lacks
                return {"status": "skipped", "note": f"needs {exc.name or exc}"}
            lines = traceback.format_exc().strip().splitlines()  # fakefinder's own import broke: a failure
            return {"status": "fail", "note": f"ImportError: {exc}"[:300], "trace": lines[-8:]}
        except Exception as exc:  # noqa: BLE001 - reported in the table
            lines = traceback.format_exc().strip().splitlines()
            return {"status": "fail", "note": f"{type(exc).__name__}: {exc}"[:300], "trace": lines[-8:]}
    if "skip" in found:
        return {"status": "skipped", "note": found["skip"]}
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"status": "pass", **found, "peak_gpu_gb": round(peak, 3) if peak is not None else None}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--only", default="", help="run the checks whose name holds this text")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a single check, in this process (the children)
    parser.add_argument("--results", default=str(HERE / "results" / "gpu_check.json"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.device)))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run this on a GPU machine (or --device cpu for the plumbing)")
        return 2
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {gpu}")
    rows, started = [], time.perf_counter()
    for name in [n for n in CHECKS if args.only in n]:
        began = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, __file__, "--one", name, "--device", args.device],
                capture_output=True,
                text=True,
                timeout=LIMIT_S,
            )
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            row = (
                json.loads(lines[-1])
                if lines
                else {"status": "fail", "note": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
            )
        except subprocess.TimeoutExpired:
            row = {"status": "fail", "note": f"over {LIMIT_S} s"}
        row.update(check=name, wall_s=round(time.perf_counter() - began, 1))
        rows.append(row)
        step = f"{row['step_s'] * 1000:.0f} ms/{row.get('unit', 'step')}" if row.get("step_s") else ""
        memory = f"{row['peak_gpu_gb']:.2f} GB" if row.get("peak_gpu_gb") is not None else ""
        print(
            f"{name:34s} {row['status']:8s} {step:>18s} {memory:>9s}  {row['wall_s']:6.1f} s  "
            f"{row.get('note', '')}",
            flush=True,
        )
    total = time.perf_counter() - started
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(
        json.dumps(
            {"device": gpu, "torch": torch.__version__, "seconds": round(total, 1), "checks": rows}, indent=1
        )
    )
    failed = [r["check"] for r in rows if r["status"] == "fail"]
    print(
        f"{len(rows)} checks in {total:.0f} s: {sum(r['status'] == 'pass' for r in rows)} passed, "
        f"{len(failed)} failed {failed if failed else ''}, {sum(r['status'] == 'skipped' for r in rows)} "
        f"skipped"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
