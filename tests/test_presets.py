from pathlib import Path

import pytest

from fakefinder.config import load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_preset_is_a_valid_config(path):
    config = load_config(path)
    assert config.notes == []  # today's names only: no renamed key, no section the kind does not read
    if path.stem.startswith("dx"):  # DX-LLaVA presets read LLaVA JSON, not datasets
        assert config.dx_llava.data.train_json is not None
    elif path.stem.startswith("llm"):  # language-model presets read instruction JSONL
        assert config.llm.data.train_file is not None and config.task in ("llm_lora", "llm_qlora")
    elif path.stem.startswith("yolo"):  # object detectors read a YOLO dataset given on the command line
        assert config.task == "object_detector" and config.object_detector.model.arch.endswith(".yaml")
    elif path.stem.startswith("sd"):  # text-to-image LoRAs read a captioned folder given on the command line
        assert config.task == "text_to_image_lora" and config.diffusion.data.path is None
    else:
        assert config.data.datasets


def test_the_presets_the_docs_promise_exist():
    assert {
        "baseline",
        "hybrid",
        "swin",
        "xception",
        "sbi",
        "dfdc-faces-cpu",
        "dx_llava",
        "dx_llava_stage1",
        "dx-llava-smollm2-cpu",
        "llm-lora-7b",
        "llm-lora-13b",
        "llm-qlora-7b",
        "llm-qlora-13b",
        "llm-lora-smollm2-cpu",
        "yolo-detector",
        "sd15-lora",
    } <= {p.stem for p in CONFIGS}


def test_yolo_preset_is_the_usual_recipe():
    section = load_config(Path(__file__).parent.parent / "configs" / "yolo-detector.yaml").object_detector
    assert section.model.arch == "yolov8n.yaml" and section.model.weights is None
    assert (section.train.imgsz, section.train.epochs, section.train.batch_size) == (640, 100, 16)


def test_sd_lora_preset_is_the_usual_recipe():
    config = load_config(Path(__file__).parent.parent / "configs" / "sd15-lora.yaml")
    d = config.diffusion
    assert (
        config.task == "text_to_image_lora" and d.model.base == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    )
    assert (d.data.resolution, d.lora.r, d.train.lr, d.train.max_steps) == (512, 8, 1e-4, 2000)
    assert (d.train.batch_size, d.train.accumulate, d.train.snr_gamma) == (1, 4, 5.0)


def test_baseline_preset_values():
    config = load_config(Path(__file__).parent.parent / "configs" / "baseline.yaml")
    assert config.model.name == "baseline"
    assert (config.train.lr, config.train.weight_decay, config.train.batch_size) == (1e-4, 0.01, 32)
    assert (config.train.epochs, config.train.early_stopping.patience) == (100, 15)
    assert config.train.loss == {"ce": 0.5, "focal": 0.3, "f1": 0.2}
    assert config.train.scheduler == "cosine" and config.train.precision == "auto"


def test_dx_llava_preset_is_the_recipe():
    dx = load_config(Path(__file__).parent.parent / "configs" / "dx_llava.yaml").dx_llava
    assert dx.model.vision_tower.startswith("open_clip:") and "convnext_large_d_320" in dx.model.vision_tower
    assert (dx.train.lm_loss_weight, dx.train.binary_loss_weight) == (1.0, 10.0)
    assert dx.model.projector == "mlp2x_gelu" and dx.train.mode == "lora"
    assert (dx.lora.r, dx.lora.alpha, dx.lora.double_quant) == (128, 256, True)


@pytest.mark.parametrize("size, r, lr, batch, accumulate", [("7b", 8, 2e-4, 4, 4), ("13b", 16, 1e-4, 2, 8)])
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_llm_presets_are_the_usual_recipes(method, size, r, lr, batch, accumulate):
    config = load_config(Path(__file__).parent.parent / "configs" / f"llm-{method}-{size}.yaml")
    llm = config.llm
    assert config.task == f"llm_{method}" and llm.lora.use_4bit == (method == "qlora")
    assert (llm.lora.r, llm.lora.alpha, llm.train.lr) == (r, 2 * r, lr)
    assert (llm.train.batch_size, llm.train.accumulate, llm.train.epochs) == (batch, accumulate, 3)
    assert size.upper() in llm.model.base.upper()
