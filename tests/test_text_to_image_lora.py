"""Text-to-image LoRA: the captioned folder checked (every bad file named), training from the preset
on tiny random components, sample images, resume after a kill (the same adapter as an unbroken
run), the adapter loaded by diffusers into a pipeline of the same components (different from the
base; the base again at scale 0), merged, predict and evaluate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import kill_when
from fakefinder.config import load_config
from fakefinder.synthetic import make_captioned_folder
from fakefinder.tasks.text_to_image_lora.config import DiffusionDataConfig
from fakefinder.tasks.text_to_image_lora.data import CaptionError, epoch_batches, read_folder, read_prompts

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / "configs" / "sd15-lora.yaml"


def overrides(data: Path, output: Path, **train) -> list[str]:
    """The preset made a seconds-long run: tiny random components, 32 px, a few steps."""
    steps = {
        "max_steps": 6,
        "batch_size": 2,
        "accumulate": 1,
        "save_steps": 2,
        "eval_steps": 3,
        "logging_steps": 1,
        "lr": 0.01,
        "num_workers": 0,
        **train,
    }
    return [
        f"diffusion.data.path={data}",
        "diffusion.model.base=random:tiny",
        "diffusion.data.resolution=32",
        "diffusion.data.val_ratio=0.25",
        "diffusion.sample.steps=2",
        "diffusion.eval.timesteps=3",
        f"diffusion.train.output_dir={output}",
        f"evaluate.output_dir={output.parent / (output.name + '-eval')}",
        *[f"diffusion.train.{k}={v}" for k, v in steps.items()],
    ]


@pytest.fixture(scope="module")
def captioned(tmp_path_factory) -> Path:
    return make_captioned_folder(tmp_path_factory.mktemp("t2i") / "data", count=8, size=40)


# ---------------------------------------------------------------------------------------------
# the captioned folder


def test_captions_from_metadata_or_txt(tmp_path):
    meta = make_captioned_folder(tmp_path / "meta", count=3, size=16)
    txt = make_captioned_folder(tmp_path / "txt", count=3, size=16, captions="txt")
    for folder, source in ((meta, "metadata"), (txt, "txt")):
        items, report = read_folder(folder, DiffusionDataConfig())
        assert [i.image.name for i in items] == ["img_0000.png", "img_0001.png", "img_0002.png"]
        assert all(i.source == source and i.caption.endswith("on a grey background") for i in items)
        assert report.captions == {source: 3}
    texts = {i.image.name: i.caption for i in read_folder(meta, DiffusionDataConfig())[0]}
    lines = [json.loads(x) for x in (meta / "metadata.jsonl").read_text().splitlines()]
    assert texts == {x["file_name"]: x["text"] for x in lines}


def test_every_bad_file_is_named(tmp_path):
    folder = make_captioned_folder(tmp_path / "bad", count=3, size=16, captions="txt")
    (folder / "img_0001.png").unlink()  # img_0001.txt: a caption without its image
    (folder / "img_0002.txt").unlink()  # img_0002.png: an image without a caption
    (folder / "broken.png").write_bytes(b"\x89PNG not really")  # unreadable
    (folder / "broken.txt").write_text("a broken image")
    (folder / "README.txt").write_text("shapes, drawn for a test")  # no caption, and no problem
    with pytest.raises(CaptionError) as caught:
        read_folder(folder, DiffusionDataConfig())
    message = str(caught.value)
    assert "3 problem(s)" in message
    assert f"{folder / 'img_0001.txt'}: a caption with no image" in message
    assert f"{folder / 'img_0002.png'}: an image without a caption" in message
    assert f"{folder / 'broken.png'}: unreadable image" in message
    assert {p.kind for p in caught.value.problems} == {
        "caption_without_image",
        "image_without_caption",
        "unreadable_image",
    }
    # skipped instead: the good image is kept, the others listed
    items, report = read_folder(folder, DiffusionDataConfig(bad_files="skip"))
    assert [i.image.name for i in items] == ["img_0000.png"] and len(report.problems) == 3
    # captions not required: the image without one trains with the default caption
    items, _ = read_folder(
        folder, DiffusionDataConfig(bad_files="skip", require_captions=False, default_caption="x")
    )
    assert {i.image.name: i.caption for i in items}["img_0002.png"] == "x"


def test_links_out_of_the_folder_and_shared_names(tmp_path):
    folder = make_captioned_folder(tmp_path / "in", count=2, size=16, captions="txt")
    outside = make_captioned_folder(tmp_path / "out", count=1, size=16, captions="txt")
    (folder / "linked.png").symlink_to(outside / "img_0000.png")
    (folder / "linked.txt").write_text("a linked image")
    assert len(read_folder(folder, DiffusionDataConfig())[0]) == 3  # the CLI follows links
    with pytest.raises(CaptionError, match=r"linked.png: links to .*out/img_0000.png, outside"):
        read_folder(folder, DiffusionDataConfig(confine=True))  # the platform does not
    (folder / "linked.png").unlink()
    (folder / "img_0000.jpg").write_bytes((folder / "img_0000.png").read_bytes())
    with pytest.raises(
        CaptionError, match=r"img_0000.txt: one caption for several images \(img_0000.jpg, img_0000.png\)"
    ):
        read_folder(folder, DiffusionDataConfig())


def test_metadata_problems_name_file_and_line(tmp_path):
    folder = make_captioned_folder(tmp_path / "m", count=2, size=16)
    with open(folder / "metadata.jsonl", "a") as handle:
        handle.write(
            '{"file_name": "gone.png", "text": "a caption for nothing"}\n{"file_name": "img_0000.png"}\n'
            "not json\n"
        )
    with pytest.raises(CaptionError) as caught:
        read_folder(folder, DiffusionDataConfig())
    message = str(caught.value)
    meta = folder / "metadata.jsonl"
    assert f"{meta}:3: a caption for gone.png, which does not exist" in message
    assert f'{meta}:4: needs a text "text"' in message and f"{meta}:5: not a JSON object" in message
    (folder / "metadata.jsonl").write_text('{"file_name": "img_0000.png", "text": "one"}\n')
    with pytest.raises(CaptionError, match=r"img_0001.png: an image without a caption \(no line in"):
        read_folder(folder, DiffusionDataConfig())


def test_epoch_order_depends_on_seed_and_epoch_only():
    a = epoch_batches(10, 3, seed=1, epoch=2)
    assert a == epoch_batches(10, 3, seed=1, epoch=2) and a != epoch_batches(10, 3, seed=1, epoch=3)
    assert sorted(i for batch in a for _, i in batch) == list(range(10)) and [len(b) for b in a] == [
        3,
        3,
        3,
        1,
    ]


def test_prompt_files(tmp_path):
    (tmp_path / "p.txt").write_text("a red disc\n\na blue square\n")
    assert [r["prompt"] for r in read_prompts(tmp_path / "p.txt")] == ["a red disc", "a blue square"]
    (tmp_path / "p.jsonl").write_text(
        '{"prompt": "x", "seed": 5, "id": "a"}\n{"prompt": "y", "seed": "five"}\n'
    )
    with pytest.raises(CaptionError, match=r"p.jsonl:2: \"seed\" must be a whole number"):
        read_prompts(tmp_path / "p.jsonl")


# ---------------------------------------------------------------------------------------------
# training, the adapter in diffusers, predict, evaluate, export


def _image(pipeline, prompt="a red disc on a grey background", seed=3) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    return pipeline(
        prompt, num_inference_steps=3, height=32, width=32, generator=generator, output_type="np"
    ).images


def _check_trained_run(config, result, seen: list, run: Path) -> None:
    """The run's steps, logged losses, progress, sample images and adapter weights."""
    from safetensors.torch import load_file

    from fakefinder.core.artifact import read_artifact

    assert result.steps == 6 and result.artifact == run / "model"
    losses = [e.data for e in seen if e.type == "metrics" and e.stage in ("train", "val")]
    assert [row["step"] for row in losses] == [1, 2, 3, 4, 5, 6] and all(
        np.isfinite(r["loss"]) for r in losses
    )
    assert "val_loss" in losses[2]  # the held-out loss at each sample step
    progress = [e.step for e in seen if e.type == "progress" and e.stage == "diffusion train"]
    assert progress[-1] == 6
    # sample images at the fixed prompts: at step 3 and at the end, the same seeds
    for folder in ("step-000003", "final"):
        index = json.loads((run / "samples" / folder / "index.json").read_text())
        assert [row["prompt"] for row in index] == config.diffusion.sample.prompts
        assert all((run / "samples" / folder / row["file"]).is_file() for row in index)
    assert read_artifact(run / "model").kind == "text_to_image_lora"
    weights = load_file(str(run / "model" / "adapter" / "pytorch_lora_weights.safetensors"))
    assert all("lora" in k for k in weights) and {k.split(".")[0] for k in weights} == {
        "unet",
        "text_encoder",
    }


def _check_adapter_in_diffusers(run: Path):
    """The adapter in a pipeline built from the same components (the base the run wrote): it changes
    the image, and at scale 0 gives the base's again. Returns the pipeline and the adapted image."""
    from diffusers import StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(
        run / "base_model", safety_checker=None, requires_safety_checker=False
    )
    pipeline.set_progress_bar_config(disable=True)
    base = _image(pipeline)
    pipeline.load_lora_weights(str(run / "model" / "adapter"), adapter_name="trained")
    for part in (
        pipeline.unet,
        pipeline.text_encoder,
    ):  # both adapters, their strength in the file: alpha 16, rank 8
        assert (part.peft_config["trained"].r, part.peft_config["trained"].lora_alpha) == (8, 16)
    adapted = _image(pipeline)
    assert np.abs(adapted - base).max() > 1e-3
    pipeline.set_adapters(["trained"], adapter_weights=[0.0])
    np.testing.assert_allclose(_image(pipeline), base, atol=1e-6)
    return pipeline, adapted


def _check_predict(captioned, config, run: Path, tmp_path: Path, pipeline) -> None:
    """Predict: images for prompts, listed in a CSV; the same seed gives the same image."""
    import fakefinder

    (tmp_path / "prompts.txt").write_text(
        "a red disc on a grey background\na blue square on a grey background\n"
    )
    predicted = fakefinder.predict(
        load_config(
            PRESET,
            [
                *overrides(captioned, run),
                f"predict.models=[{run / 'model'}]",
                f"predict.inputs=[{tmp_path / 'prompts.txt'}]",
                f"predict.output={tmp_path / 'gen' / 'images.csv'}",
                "diffusion.sample.steps=3",
            ],
        )
    )
    table = predicted.table
    assert list(table["prompt"]) == ["a red disc on a grey background", "a blue square on a grey background"]
    assert all(Path(p).is_file() for p in table["image"])
    from PIL import Image

    pipeline.set_adapters(["trained"], adapter_weights=[1.0])
    generator = torch.Generator().manual_seed(int(table["seed"][0]))
    again = pipeline(
        table["prompt"][0],
        num_inference_steps=3,
        height=32,
        width=32,
        generator=generator,
        guidance_scale=config.diffusion.sample.guidance_scale,
    ).images[0]
    assert np.array_equal(np.asarray(again), np.asarray(Image.open(table["image"][0]).convert("RGB")))


def _check_evaluate(config) -> None:
    """Evaluate: held-out loss with and without the adapter, samples of both, a report."""
    import fakefinder

    report = fakefinder.evaluate(config)
    metrics = json.loads(report.metrics_file.read_text())
    entry = metrics["models"]["run/model"]
    assert entry["images"] == 2 and metrics["set"] == "val"
    assert entry["loss"] != entry["base_loss"] and entry["loss_change"] == pytest.approx(
        entry["loss"] - entry["base_loss"]
    )
    page = report.report_file.read_text()
    assert f"{entry['loss']:.4f}"[:5] in page and "adapted" in page


def _check_export_and_merge(config, run: Path, tmp_path: Path, adapted: np.ndarray) -> None:
    """Export: the adapter folder; merged: a whole pipeline whose output is the adapted one's."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from fakefinder.core.artifact import read_artifact
    from fakefinder.tasks import get_task

    task = get_task("text_to_image_lora")
    exported = task.export(run / "model", tmp_path / "exported").path
    assert (exported / "pytorch_lora_weights.safetensors").is_file()
    kohya = StableDiffusionPipeline.from_pretrained(
        run / "base_model", safety_checker=None, requires_safety_checker=False
    )
    kohya.set_progress_bar_config(disable=True)
    assert (
        load_file(str(exported / "lora-kohya.safetensors"))[
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.alpha"
        ]
        == 16
    )  # alpha kept
    kohya.load_lora_weights(
        str(exported), weight_name="lora-kohya.safetensors"
    )  # diffusers reads kohya files too
    np.testing.assert_allclose(_image(kohya), adapted, atol=1e-6)
    merged = task.export(run / "model", tmp_path / "merged", merged=True).path
    fused = StableDiffusionPipeline.from_pretrained(
        merged, safety_checker=None, requires_safety_checker=False
    )
    fused.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(_image(fused), adapted, atol=2e-3)
    # merge: an artifact of the same kind that generates on its own, as the adapted pipeline does
    from fakefinder.tasks import read_model

    merged_artifact = task.merge(run / "model", tmp_path / "merged-model")
    assert read_artifact(merged_artifact).kind == "text_to_image_lora"
    generator = task.load([read_model(merged_artifact)], "cpu", config)
    image = generator.pipeline(
        "a red disc on a grey background",
        num_inference_steps=3,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(3),
        output_type="np",
    ).images
    np.testing.assert_allclose(image, adapted, atol=2e-3)


def test_trains_from_the_preset_and_diffusers_loads_the_adapter(captioned, tmp_path):
    import fakefinder

    config = load_config(
        PRESET,
        [
            *overrides(captioned, tmp_path / "run"),
            "diffusion.lora.alpha=16",
            "diffusion.lora.train_text_encoder=true",
            "diffusion.train.text_encoder_lr=0.05",
        ],
    )
    seen = []
    result = fakefinder.train(config, events=seen.append)
    run = tmp_path / "run"
    _check_trained_run(config, result, seen, run)
    pipeline, adapted = _check_adapter_in_diffusers(run)
    _check_predict(captioned, config, run, tmp_path, pipeline)
    _check_evaluate(config)
    _check_export_and_merge(config, run, tmp_path, adapted)


def _fakefinder(*args: str) -> list[str]:
    return [sys.executable, "-m", "fakefinder", *args]


def test_resume_after_a_kill_gives_the_unbroken_run(captioned, tmp_path):
    from safetensors.torch import load_file

    import fakefinder
    from fakefinder.core.runlock import RunFolderError

    steps = {"max_steps": 18, "save_steps": 3, "eval_steps": 1000}
    args = [
        "train",
        "-c",
        str(PRESET),
        *overrides(captioned, tmp_path / "killed", **steps),
        "diffusion.lora.dropout=0.1",
    ]
    kill_when(
        _fakefinder(*args),
        lambda: any((tmp_path / "killed" / "checkpoints").glob("step-*/state.json")),
        cwd=tmp_path,
    )
    assert not (tmp_path / "killed" / "model").exists(), "the kill should land mid-run"
    with pytest.raises(RunFolderError, match="--resume"):
        fakefinder.train(load_config(PRESET, args[3:]))
    saved = max(
        int(p.parent.name[5:]) for p in (tmp_path / "killed" / "checkpoints").glob("step-*/state.json")
    )
    from fakefinder.config import ConfigError

    with pytest.raises(ConfigError, match=r"other settings \(diffusion.train.lr: 0.01 -> 0.02\)"):
        fakefinder.train(load_config(PRESET, [*args[3:], "diffusion.train.lr=0.02"]), resume=True)
    seen = []
    resumed = fakefinder.train(load_config(PRESET, args[3:]), resume=True, events=seen.append)
    assert resumed.steps == 18 and resumed.artifact
    assert any(e.type == "log" and f"step {saved} of 18" in e.message for e in seen)
    progress = [e.step for e in seen if e.type == "progress" and e.stage == "diffusion train"]
    assert progress[0] == saved + 1 and progress[-1] == 18

    straight = load_config(
        PRESET,
        [
            *overrides(captioned, tmp_path / "straight", **steps),
            "diffusion.lora.dropout=0.1",
            "diffusion.train.num_workers=1",
        ],
    )  # loaded aside
    fakefinder.train(straight)
    a = load_file(str(tmp_path / "killed" / "model" / "adapter" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "straight" / "model" / "adapter" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
    history = json.loads((tmp_path / "killed" / "checkpoints" / "step-000018" / "state.json").read_text())[
        "history"
    ]
    assert [row["step"] for row in history] == list(range(1, 19))  # each step logged once
    unbroken = json.loads((tmp_path / "straight" / "checkpoints" / "step-000018" / "state.json").read_text())[
        "history"
    ]
    assert [row["loss"] for row in history] == pytest.approx([row["loss"] for row in unbroken], abs=1e-6)


def test_bad_data_stops_before_the_run_folder_is_touched(tmp_path):
    import fakefinder

    folder = make_captioned_folder(tmp_path / "bad", count=2, size=16, captions="txt")
    (folder / "img_0001.txt").unlink()
    with pytest.raises(CaptionError, match="img_0001.png: an image without a caption"):
        fakefinder.train(load_config(PRESET, overrides(folder, tmp_path / "run")))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_base_is_checked_and_named(tmp_path):
    from fakefinder.config import ConfigError
    from fakefinder.tasks.text_to_image_lora.model import load_components

    with pytest.raises(ConfigError, match=r"diffusion.model.base='.*nowhere': cannot load it as a hub id"):
        load_components(str(tmp_path / "nowhere"), None, None)
    xl = tmp_path / "xl"
    xl.mkdir()
    (xl / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionXLPipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            }
        )
    )
    with pytest.raises(ConfigError, match="not SDXL"):
        load_components(str(xl), None, None)
    (xl / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "scheduler": ["os", "system"],
            }
        )
    )
    with pytest.raises(ConfigError, match="not a diffusers scheduler"):
        load_components(str(xl), None, None)


def test_pickled_weights_are_never_loaded(tmp_path):
    from safetensors.torch import load_file

    from fakefinder.config import ConfigError
    from fakefinder.tasks.text_to_image_lora.model import load_components, write_tiny_pipeline

    base = write_tiny_pipeline(tmp_path / "base")
    assert set(load_components(str(base), None, None)) >= {
        "unet",
        "vae",
        "text_encoder",
        "tokenizer",
        "noise",
    }
    weights = base / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(
        load_file(str(weights)), base / "unet" / "diffusion_pytorch_model.bin"
    )  # the pickled form only
    weights.unlink()
    with pytest.raises(ConfigError, match="diffusion.model.base"):
        load_components(str(base), None, None)
