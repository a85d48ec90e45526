"""DX-LLaVA with tiny random models built from configs: data checks, both losses, what trains
under each mode, QLoRA on CPU, stage-1 projector, checkpoint conversion, merge, resume, inference."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import peft  # noqa: F401  (installed by the set-up: fails here, not deep in a test)
import pytest
import torch
from PIL import Image

from fakefinder import synthetic
from fakefinder.config import ConfigError, config_from_dict
from fakefinder.engine.tiny import build_char_tokenizer, tiny_clip_vision_config, tiny_llama_config
from fakefinder.tasks.dx_llava import data as dxdata

_conversation = synthetic.llava_conversation


@pytest.fixture(scope="module")
def dx_data(tmp_path_factory) -> dict:
    """12 images whose red channel tells the class, a LLaVA JSON about them, a char tokenizer."""
    root = synthetic.make_llava_set(tmp_path_factory.mktemp("dx"))
    return {
        "root": root,
        "images": root / "images",
        "json": root / "train.json",
        "items": json.loads((root / "train.json").read_text()),
        "tokenizer": build_char_tokenizer(root / "tokenizer"),
    }


def dx_config(dx_data, output: Path, tower: str = "clip", **train):
    model = {"language_model": "random:tiny", "tokenizer": str(dx_data["tokenizer"])}
    if tower == "clip":
        model.update(vision_tower="random:tiny")
    else:
        model.update(vision_tower="timm:test_convnext", vision_pretrained=False, image_size=32)
    model.update(train.pop("model", {}))
    lora = {"r": 4, "alpha": 8, "compute_dtype": "fp32", **train.pop("lora", {})}
    settings = {
        "output_dir": str(output),
        "mode": "lora",
        "max_steps": 4,
        "batch_size": 4,
        "eval_steps": 2,
        "save_steps": 2,
        "logging_steps": 1,
        "num_workers": 0,
        "lr": 2e-3,
        "trackers": [],
        **train,
    }
    return config_from_dict(
        {
            "task": "dx_llava",
            "faces": {"detect": False, "size": 32},
            "dx_llava": {
                "model": model,
                "data": {
                    "train_json": str(dx_data["json"]),
                    "eval_json": str(dx_data["json"]),
                    "image_folder": str(dx_data["images"]),
                },
                "lora": lora,
                "train": settings,
            },
        }
    )


def _batch(model, tokenizer, dx_data, cfg, n: int = 4):
    samples, _ = dxdata.read_samples(dx_data["json"], dx_data["images"])
    conv = dxdata.Conversation(tokenizer, model.num_image_tokens, cfg.dx_llava.model.template)
    tower = model.vision_tower
    dataset = dxdata.ConversationDataset(samples[:n], conv, tower.image_size, tower.mean, tower.std)
    return dxdata.Collator(tokenizer.pad_token_id)([dataset[i] for i in range(n)])


# ---------------------------------------------------------------------------------------------
# data


def test_labels_from_field_answer_and_ambiguity():
    assert dxdata.derive_label(["Blurry seams. ### Answer: fake"]) == 1
    assert dxdata.derive_label(["It is an authentic recording"]) == 0
    assert dxdata.derive_label(["This face is not real"]) == 1
    assert dxdata.derive_label(["It could be real or fake"]) is None
    assert dxdata.derive_label(["A person smiling"]) is None
    # the final '### Answer' wins over words earlier in the explanation
    assert dxdata.derive_label(["No manipulated region, genuine skin. ### Answer: real"]) == 0


def test_read_samples_reports_ambiguous_and_uses_binary_label(dx_data, tmp_path):
    items = [dict(dx_data["items"][0]), dict(dx_data["items"][1])]
    items[0]["conversations"] = [items[0]["conversations"][0], {"from": "gpt", "value": "Hard to say."}]
    items[1]["binary_label"] = 0  # the field wins over the answer text ("fake")
    path = tmp_path / "a.json"
    path.write_text(json.dumps(items))
    samples, report = dxdata.read_samples(path, dx_data["images"])
    assert [s.binary_label for s in samples] == [-1, 0]
    assert report["ambiguous"] == ["s0"]
    with pytest.raises(dxdata.DataError, match="s0"):
        dxdata.read_samples(path, dx_data["images"], ambiguous="error")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda items: items[3].update(image="missing.png"), r"'s3'.*missing\.png"),
        (lambda items: items[2]["conversations"][0].update(value="no token here"), r"'s2'.*no <image> token"),
        (
            lambda items: items[1].update(conversations=[{"from": "gpt", "value": "real"}]),
            r"'s1'.*conversations",
        ),
        (lambda items: items[4].update(binary_label=7), r"'s4'.*binary_label"),
    ],
)
def test_bad_samples_are_named(dx_data, tmp_path, damage, message):
    items = json.loads(json.dumps(dx_data["items"]))
    damage(items)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(items))
    with pytest.raises(dxdata.DataError, match=message):
        dxdata.read_samples(path, dx_data["images"])


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"id": "a",\n "image": }]')
    with pytest.raises(dxdata.DataError, match=r"broken\.json.*line 2"):
        dxdata.read_samples(path, tmp_path)


@pytest.mark.parametrize("template", ["vicuna_v1", "chatml"])
def test_only_answers_are_labelled_and_image_positions_are_marked(dx_data, template):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(dx_data["tokenizer"])
    conv = dxdata.Conversation(tokenizer, num_image_tokens=5, template=template)
    turns = [("<image>\nfirst?", "yes"), ("second?", "no ### Answer: real")]
    enc = conv.encode(turns)
    assert sum(enc.image_mask) == 5
    labelled = tokenizer.decode([t for t, label in zip(enc.input_ids, enc.labels) if label != -100])
    assert "yes" in labelled and "### Answer: real" in labelled
    assert "first?" not in labelled and "second?" not in labelled and "USER" not in labelled
    assert enc.labels[enc.prompt_end] == -100 and enc.labels[enc.prompt_end + 1] != -100
    prompt = conv.encode_prompt("<image>\nfirst?")
    assert all(label == -100 for label in prompt.labels) and prompt.prompt_end == len(prompt.input_ids) - 1


def test_pad_to_square_uses_the_mean_colour(tmp_path):
    Image.fromarray(np.zeros((10, 30, 3), dtype="uint8")).save(tmp_path / "wide.png")
    mean, std = (0.5, 0.25, 0.75), (1.0, 1.0, 1.0)
    x = dxdata.load_image(tmp_path / "wide.png", 30, mean, std, "pad")
    assert x.shape == (3, 30, 30)
    top = x[:, 0, 15] + torch.tensor(mean)  # padded rows hold the mean colour
    assert torch.allclose(top, torch.tensor(mean), atol=0.01)
    assert torch.allclose(x[:, 15, 15], -torch.tensor(mean), atol=0.01)  # the black image itself


def test_length_grouped_batches_hold_similar_lengths():
    lengths = [5, 100, 6, 98, 7, 97, 8, 99]
    sampler = dxdata.LengthGroupedSampler(lengths, batch_size=2, seed=1)
    order = list(sampler)
    assert sorted(order) == list(range(8))
    batches = [sorted(lengths[i] for i in order[j : j + 2]) for j in range(0, 8, 2)]
    assert all(b[1] - b[0] <= 3 for b in batches)
    assert max(lengths[i] for i in order[:2]) == 100  # the longest batch first


def test_make_data_from_a_manifest(tmp_path):
    from conftest import make_crops

    manifest = make_crops(tmp_path / "crops", groups=5)
    written = dxdata.make_data(manifest, tmp_path / "llava")
    assert set(written) == {"train", "val", "test"}
    samples, report = dxdata.read_samples(written["train"], tmp_path / "crops")
    assert report["real"] == report["fake"] == 3 and not report["ambiguous"]
    for s in samples:  # the label derived from the text agrees with the manifest's
        assert dxdata.derive_label([s.turns[-1][1]]) == s.binary_label
        assert s.turns[-1][1].rstrip().endswith(("### Answer: real", "### Answer: fake"))
    assert len({s.turns[0][0] for s in samples} | {s.turns[-1][1] for s in samples}) > 4  # varied templates


# ---------------------------------------------------------------------------------------------
# model


@pytest.mark.parametrize("tower", ["clip", "convnext"])
def test_forward_backward_both_losses(dx_data, tmp_path, tower):
    from fakefinder.tasks.dx_llava.model import build_model

    cfg = dx_config(dx_data, tmp_path / "out", tower, mode="full")
    model, tokenizer, info = build_model(cfg.dx_llava, tmp_path / "out")
    if tower == "convnext":
        assert info["num_image_tokens"] == 1  # test_convnext at 32 px: a 1x1 last stage
    batch = _batch(model, tokenizer, dx_data, cfg)
    out = model(**batch)
    assert torch.isfinite(out["lm_loss"]) and torch.isfinite(out["binary_loss"]) and out["lm_loss"] > 0
    expected = 1.0 * out["lm_loss"] + 10.0 * out["binary_loss"]
    assert torch.allclose(out["loss"], expected)
    out["loss"].backward()
    assert model.head.net[0].weight.grad.abs().sum() > 0
    assert model.projector[0].weight.grad.abs().sum() > 0
    assert model.language_model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.vision_tower.parameters())  # frozen by default


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_answer_only_lm_loss_equals_the_full_vocabulary_loss(dx_data, tmp_path, mode):
    from fakefinder.tasks.dx_llava.model import build_model

    cfg = dx_config(dx_data, tmp_path / "out", mode=mode, model={"head_source": "last_prompt_token"})
    model, tokenizer, _ = build_model(cfg.dx_llava, tmp_path / "out")
    model.eval()
    batch = _batch(model, tokenizer, dx_data, cfg)
    assert model._decoder_and_head() is not None  # the fast path is the one under test
    out = model(**batch)
    embeds, projected = model.embed(batch["input_ids"], batch["image_mask"].bool(), batch["pixel_values"])
    reference = model.language_model(
        inputs_embeds=embeds,
        attention_mask=batch["attention_mask"],
        labels=batch["labels"],
        output_hidden_states=True,
        use_cache=False,
    )
    assert torch.allclose(out["lm_loss"], reference.loss, atol=1e-5)
    head = model.binary_logits(projected, reference.hidden_states[-1], batch["prompt_end"])
    assert torch.allclose(out["binary_logits"], head, atol=1e-5)  # same hidden state for the head


def test_tower_from_a_trained_detector_checkpoint_travels_with_the_run(dx_data, tmp_path):
    """vision_tower: fakefinder:<model artifact> uses a classic detector's backbone (its input size and
    normalisation too); the run saves the tower, so it reloads after the detector file is gone."""
    import shutil

    from conftest import make_crops, train_config
    from fakefinder.api import train as train_detector
    from fakefinder.tasks.classification.scoring import load_detector
    from fakefinder.tasks.dx_llava.model import load_model
    from fakefinder.tasks.dx_llava.train import train as train_dx

    manifest = make_crops(tmp_path / "crops", groups=6)
    detector_config = train_config(manifest, tmp_path / "detector", epochs=1, batch_size=2, mask_loss=0.5)
    detector_run = train_detector(detector_config)
    detector = load_detector(detector_run.artifact).model
    source = tmp_path / "tower"
    shutil.copytree(detector_run.artifact, source)

    cfg = dx_config(
        dx_data,
        tmp_path / "run",
        max_steps=2,
        model={"vision_tower": f"fakefinder:{source}", "measured_prompt": True},
    )
    result = train_dx(cfg)
    final = result.artifact
    meta = json.loads((final / "model.json").read_text())
    assert meta["kind"] == "dx_llava" and meta["architecture"]["tower_arch"] == "test_efficientnet"
    assert meta["preprocessing"]["input_size"] == 32 and meta["preprocessing"]["mean"] == [
        0.485,
        0.456,
        0.406,
    ]
    shutil.rmtree(source)
    model, _, _ = load_model(final)
    theirs = detector.backbone.state_dict()
    ours = model.vision_tower.trunk.state_dict()
    assert set(ours) == set(theirs) and all(
        torch.equal(ours[k], theirs[k]) for k in ours
    )  # frozen: unchanged
    # the detector's mask head came along and draws DX-LLaVA's heatmaps, exactly as the detector does
    head = model.vision_tower.mask_head.state_dict()
    assert all(torch.equal(head[k], detector.mask_head.state_dict()[k]) for k in head)
    assert meta["architecture"]["tower_mask"]["prior"] is False
    from fakefinder.tasks.classification.heatmaps import heatmaps as detector_heatmaps
    from fakefinder.tasks.dx_llava.predict import Explainer

    explainer = Explainer.load(final)
    image = np.asarray(Image.open(dx_data["images"] / "0.png").convert("RGB").resize((32, 32)))
    (ours_map,) = explainer.heatmaps([image])
    (theirs_map,) = detector_heatmaps(detector, explainer.pixels([image]), [(32, 32)], "mask")
    assert explainer.heatmap_method == "mask" and np.allclose(ours_map, theirs_map, atol=1e-5)
    # measured prompt: each question carries the line measured with that mask head (no true masks to
    # fit its threshold on here, so the default cut), and the explanation is written after it
    from fakefinder.tasks.dx_llava.measured import DEFAULT_THRESHOLD, measured_note
    from fakefinder.tasks.dx_llava.predict import DEFAULT_QUESTION

    assert meta["architecture"]["measured"] == {"threshold": DEFAULT_THRESHOLD, "fitted_on": 0, "f1": {}}
    (asked,) = explainer.questions([image])
    note = measured_note(explainer.measurer.evidence(image, ours_map))
    assert asked == DEFAULT_QUESTION + "\n" + note and note.startswith("Measured:")
    explainer.max_new_tokens = 4
    (answer,) = explainer.explain([image])
    assert isinstance(answer["explanation"], str) and 0 <= answer["probability"] <= 1
    assert answer["measured"] == note  # what it read, kept beside what it wrote
    from fakefinder.tasks.dx_llava.model import build_model

    with pytest.raises(ConfigError, match="not found"):
        build_model(cfg.dx_llava, tmp_path / "again")  # a new run needs the detector file


def test_open_clip_convnext_tower_gives_one_token_per_position(dx_data, tmp_path):
    """An open_clip CLIP model with a timm ConvNeXt trunk (the structure of convnext_large_d_320,
    tiny): the last stage's map becomes H*W tokens of its channel width."""
    import open_clip

    from fakefinder.tasks.dx_llava.model import build_model

    spec = {
        "embed_dim": 32,
        "vision_cfg": {
            "timm_model_name": "test_convnext",
            "timm_model_pretrained": False,
            "timm_pool": "",
            "timm_proj": "linear",
            "image_size": 64,
        },
        "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "ff_tiny_convnext_clip.json").write_text(json.dumps(spec))
    open_clip.add_model_config(tmp_path / "configs")
    cfg = dx_config(
        dx_data,
        tmp_path / "out",
        mode="full",
        model={
            "vision_tower": "open_clip:ff_tiny_convnext_clip",
            "vision_pretrained": False,
            "image_size": None,
        },
    )
    model, tokenizer, info = build_model(cfg.dx_llava, tmp_path / "out")
    assert info["image_size"] == 64 and info["num_image_tokens"] == 4  # 2x2 last stage at 64 px
    assert info["vision_hidden"] == model.vision_tower.trunk.num_features
    out = model(**_batch(model, tokenizer, dx_data, cfg))
    assert torch.isfinite(out["loss"])


def test_region_tokens_pool_the_grid_over_each_facial_region(dx_data, tmp_path):
    """With region_tokens, one token per facial region follows the grid tokens: the grid averaged
    over the region's cells (a noise image: the canonical layout, forehead on top, jaw below). The
    verdict's class-activation map comes back at the image's size."""
    from fakefinder.faces.regions import REGIONS
    from fakefinder.tasks.dx_llava.model import build_model
    from fakefinder.tasks.dx_llava.predict import Explainer

    cfg = dx_config(
        dx_data, tmp_path / "out", "convnext", mode="full", model={"image_size": 64, "region_tokens": True}
    )
    model, tokenizer, info = build_model(cfg.dx_llava, tmp_path / "out")
    assert model.grid_tokens == 4 and info["num_image_tokens"] == 4 + len(REGIONS)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    pixels = torch.stack(
        [dxdata.load_image(i, 64, model.vision_tower.mean, model.vision_tower.std) for i in images]
    )
    weights = model.region_weights(pixels)
    assert weights.shape == (2, len(REGIONS), 4)
    forehead, jaw = REGIONS.index("forehead"), REGIONS.index("chin_jaw")
    assert torch.all(weights[:, forehead, 2:] == 0) and torch.all(weights[:, jaw, :2] == 0)
    assert torch.allclose(weights[:, forehead].sum(-1), torch.ones(2))
    with torch.no_grad():
        features = model.vision_tower(pixels)
        expected = model.projector(torch.cat([features, weights @ features], dim=1))
        assert torch.allclose(model.image_tokens(pixels), expected, atol=1e-5)
    out = model(**_batch(model, tokenizer, dx_data, cfg))
    assert torch.isfinite(out["loss"])
    model.eval()
    meta = {**info, "config": cfg.dx_llava}
    conversation = dxdata.Conversation(tokenizer, model.num_image_tokens, cfg.dx_llava.model.template)
    explainer = Explainer(model, tokenizer, conversation, meta, torch.device("cpu"), 4)
    maps = explainer.heatmaps([images[0], images[1][:48]])  # a non-square image: padded, cut back
    assert explainer.heatmap_method == "cam"
    assert maps[0].shape == (64, 64) and maps[1].shape == (48, 64)
    assert all(0 <= m.min() and m.max() <= 1 for m in maps)


def test_head_reads_the_last_prompt_token_when_asked(dx_data, tmp_path):
    from fakefinder.tasks.dx_llava.model import build_model

    cfg = dx_config(dx_data, tmp_path / "out", mode="full", model={"head_source": "last_prompt_token"})
    model, tokenizer, _ = build_model(cfg.dx_llava, tmp_path / "out")
    batch = _batch(model, tokenizer, dx_data, cfg)
    out = model(**batch)
    out["binary_loss"].backward()
    # the binary loss now reaches the language model's layers through the prompt token
    assert model.language_model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_lora_trains_only_adapters_projector_and_head(dx_data, tmp_path):
    from fakefinder.tasks.dx_llava.model import build_model

    cfg = dx_config(dx_data, tmp_path / "out")
    model, _, _ = build_model(cfg.dx_llava, tmp_path / "out")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(("projector.", "head.")) or "lora_" in n for n in trainable)
    assert any("lora_" in n and "mlp.down_proj" in n for n in trainable)  # every linear layer by default
    assert not any("vision_tower" in n for n, _ in model.named_parameters() if "lora_" in n)
    assert not any("lm_head" in n for n in trainable)


def test_nan_loss_part_is_reported(dx_data, tmp_path, caplog):
    from fakefinder.tasks.dx_llava.model import build_model
    from fakefinder.tasks.dx_llava.train import _trainer_class

    cfg = dx_config(dx_data, tmp_path / "out", mode="full")
    model, tokenizer, _ = build_model(cfg.dx_llava, tmp_path / "out")
    batch = _batch(model, tokenizer, dx_data, cfg)
    batch["labels"][:] = -100  # every answer truncated away: the LM loss has nothing to average
    trainer = _trainer_class().__new__(_trainer_class())
    trainer.dx = {}
    trainer.state = type("S", (), {"global_step": 7})()
    with caplog.at_level(logging.WARNING):
        loss = trainer.compute_loss(model, batch)
    assert not torch.isfinite(loss)
    assert "step 7: lm_loss is nan" in caplog.text


# ---------------------------------------------------------------------------------------------
# training, saving, loading


def _adapter(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter" / "adapter_model.safetensors"))


def _check_trained_run(result, run: Path) -> None:
    """What a finished 4-step LoRA run logged and saved."""
    final = result.artifact
    assert result.steps == 4
    logged = [h for h in result.history if "lm_loss" in h]
    assert logged and all("binary_loss" in h and "learning_rate" in h for h in logged)
    assert {"eval_binary_accuracy", "eval_perplexity", "eval_lm_loss"} <= set(result.details["eval"])
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (final / "language_model").exists()  # LoRA: the adapter only, never the whole LM
    assert (final / "vision_tower.safetensors").is_file()  # a random tower cannot be rebuilt: saved


def _check_rerun_refused(cfg, tmp_path: Path) -> None:
    """A rerun into the finished run's folder is refused and leaves every file as it was."""
    from fakefinder.core.runlock import RunFolderError
    from fakefinder.tasks.dx_llava.train import train

    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in (tmp_path / "run").rglob("*"))
    with pytest.raises(RunFolderError, match="already holds a DX-LLaVA run.*--resume.*--overwrite"):
        train(cfg)  # a rerun into the finished run's folder
    assert (
        sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in (tmp_path / "run").rglob("*"))
        == before
    )


def _check_resume_matches(dx_data, tmp_path: Path, final: Path) -> None:
    """Resume from step 2 in a fresh run: the same adapter as the uninterrupted run."""
    import shutil

    from fakefinder.tasks.dx_llava.train import train

    resumed_cfg = dx_config(dx_data, tmp_path / "resumed")
    (tmp_path / "resumed").mkdir()
    shutil.copytree(tmp_path / "run" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    shutil.copytree(tmp_path / "run" / "base_language_model", tmp_path / "resumed" / "base_language_model")
    resumed = train(resumed_cfg, resume=True)
    assert resumed.steps == 4
    a, b = _adapter(final), _adapter(resumed.artifact)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    untrained = _adapter(tmp_path / "run" / "checkpoint-2")
    assert any(not torch.allclose(a[k], untrained[k]) for k in a)


def _check_merge_keeps_logits(dx_data, cfg, final: Path, tmp_path: Path) -> None:
    """Reload gives the logits of the trained model; merged LoRA gives the same logits."""
    from fakefinder.tasks.dx_llava.model import load_model, merge_lora

    model, tokenizer, meta = load_model(final)
    batch = _batch(model, tokenizer, dx_data, cfg)
    with torch.no_grad():
        before = model(**batch)
    merged = merge_lora(final, tmp_path / "merged")
    assert (merged / "language_model").is_dir() and not (merged / "adapter").exists()
    model2, _, meta2 = load_model(merged)
    assert meta2["mode"] == "full" and meta2["merged"]
    with torch.no_grad():
        after = model2(**batch)
    assert torch.allclose(before["binary_logits"], after["binary_logits"], atol=1e-5)
    assert torch.allclose(before["lm_loss"], after["lm_loss"], atol=1e-5)


def _check_explain_and_evaluate(dx_data, cfg, final: Path, tmp_path: Path) -> None:
    """Inference: head probability, explanation, parsed label, agreement."""
    import fakefinder
    from fakefinder.tasks.dx_llava.predict import Explainer

    explainer = Explainer.load(final, max_new_tokens=8)
    answers = explainer.explain([dx_data["images"] / "0.png", dx_data["images"] / "1.png"], heatmaps=True)
    assert len(answers) == 2 and all(
        0 <= a["probability"] <= 1 and isinstance(a["explanation"], str) for a in answers
    )
    explainer.meta["config"].answer_prefix = {"real": "Authentic", "fake": "Manipulated"}
    first = explainer.explain([dx_data["images"] / "0.png", dx_data["images"] / "1.png"])
    for a in first:  # verdict first: the text starts with the head's verdict, and so agrees with it
        assert a["explanation"].startswith("Manipulated" if a["probability"] >= 0.5 else "Authentic")
        assert a["explanation"].endswith("\n### Answer: " + ("fake" if a["probability"] >= 0.5 else "real"))
        assert a["text_label"] in (None, int(a["probability"] >= 0.5))  # a random model may add more words
    explainer.meta["config"].answer_prefix = None
    shapes = [Image.open(dx_data["images"] / f"{i}.png").size[::-1] for i in (0, 1)]
    for a, shape in zip(answers, shapes):  # a CLIP tower: the verdict's Grad-CAM on its patch grid
        assert a["heatmap"].shape == shape and 0 <= a["heatmap"].min() <= a["heatmap"].max() <= 1
        assert isinstance(a["regions"], str) and a["regions_from"] in ("face_mesh", "canonical")
        assert isinstance(a["named_regions"], list)
    cfg.evaluate.models, cfg.evaluate.output_dir, cfg.evaluate.max_samples = [final], tmp_path / "eval", 4
    cfg.dx_llava.eval.answers = 2
    evaluated = fakefinder.evaluate(cfg)
    (metrics,) = evaluated.metrics["models"].values()
    assert metrics["n"] == 4 and "auc" in metrics["head"] and metrics["text"]["n"] == 2
    assert json.loads(evaluated.metrics_file.read_text())["kind"] == "dx_llava"
    assert "explanation" in evaluated.report_file.read_text()
    assert (tmp_path / "eval" / "run" / "final" / "predictions.csv").is_file()
    _check_grounded_evaluation(final, tmp_path)


def _check_grounded_evaluation(final: Path, tmp_path: Path) -> None:
    """On make-data output (evidence kept) evaluate scores the explanations against the true masks:
    every figure is there, the report shows them, and each explanation's named regions are listed."""
    import pandas as pd

    from fakefinder.tasks.dx_llava.evaluate import evaluate_model, write_report
    from test_grounding import painted_manifest

    (tmp_path / "painted").mkdir()
    manifest, _ = painted_manifest(tmp_path / "painted")
    written = dxdata.make_data(manifest, tmp_path / "painted" / "llava")
    metrics = evaluate_model(
        final, written["test"], tmp_path / "painted", tmp_path / "grounded", batch_size=2
    )
    grounded = metrics["grounding"]
    assert grounded["regions"]["text"]["n"] == 2 and grounded["regions"]["central_baseline"]["regions"]
    assert grounded["agreement"]["n"] <= 5 and metrics["texts"]["n"] == 5
    assert {"named_drop", "random_drop", "named_beats_random"} <= set(grounded["deletion"])
    assert grounded["text_map"]["map_pointing"] in (0.0, 0.5, 1.0)
    assert "named_regions" in pd.read_csv(metrics["predictions"]).columns
    report = write_report(tmp_path / "grounded", {"data": "painted", "models": {"m": metrics}})
    assert "explanations against the evidence" in report.read_text()


def _check_predict(dx_data, cfg, final: Path, tmp_path: Path) -> None:
    """`fakefinder predict` with a DX-LLaVA checkpoint: submission + explanations per file."""
    import fakefinder

    cfg.predict.inputs = [dx_data["images"] / "0.png", dx_data["images"] / "1.png"]
    cfg.predict.models = [final]
    cfg.predict.output = tmp_path / "predict" / "submission.csv"
    cfg.predict.heatmaps = True
    cfg.predict.faces = {"detect": False}  # the images are the crops: the explained crop gets a heatmap
    cfg.dx_llava.max_new_tokens = 6
    result = fakefinder.predict(cfg)
    table = result.table
    assert list(table.id) == ["0.png", "1.png"] and table.probability.between(0, 1).all()
    assert {"explanation", "text_label", "agree"} <= set(table.columns)
    explained = json.loads(result.details_path.read_text())
    assert len(explained["files"]) == 2 and explained["models"] == [str(final)]
    for file in explained["files"]:  # the explained face carries its text and its heatmap together
        (face,) = [f for f in explained["faces"] if f["id"] == file["id"] and "explanation" in f]
        assert face["explanation"] == file["explanation"] and face["heatmap"].endswith(".png")
        assert (result.submission_path.parent / face["heatmap"]).is_file() and "regions" in face


def test_train_lora_resume_evaluate_and_merge(dx_data, tmp_path):
    from fakefinder.tasks.dx_llava.train import train

    cfg = dx_config(dx_data, tmp_path / "run")
    result = train(cfg)
    final = result.artifact
    _check_trained_run(result, tmp_path / "run")
    _check_rerun_refused(cfg, tmp_path)
    _check_resume_matches(dx_data, tmp_path, final)
    _check_merge_keeps_logits(dx_data, cfg, final, tmp_path)
    _check_explain_and_evaluate(dx_data, cfg, final, tmp_path)
    _check_predict(dx_data, cfg, final, tmp_path)


def test_deepspeed_zero3_on_two_cpu_processes_saves_whole_weights(dx_data, tmp_path):
    """`torchrun --nproc_per_node 2 -m fakefinder train` with DeepSpeed ZeRO-3 (gloo on CPU), set to
    partition every parameter: one process group, each rank gets half of every batch's samples, rank 0
    alone writes the base LM and the model, and what it saves is whole tensors (not each rank's empty
    slice) in the shapes of the model, moved by training. (ZeRO-2 keeps whole parameters on every rank:
    its saving is the plain one; the detector's DeepSpeed test runs ZeRO-2 against DDP.)"""
    from importlib import resources

    import deepspeed  # noqa: F401  (installed by the set-up)
    from safetensors.torch import load_file

    from conftest import torchrun_train
    from fakefinder.config import save_config
    from fakefinder.tasks.dx_llava.model import build_model

    zero3 = json.loads(
        (resources.files("fakefinder.tasks.dx_llava") / "deepspeed" / "zero3.json").read_text()
    )
    zero3["zero_optimization"]["stage3_param_persistence_threshold"] = 0  # tiny tensors are partitioned too
    (tmp_path / "zero3.json").write_text(json.dumps(zero3))
    cfg = dx_config(
        dx_data,
        tmp_path / "zero3",
        max_steps=None,
        epochs=1,
        batch_size=2,
        eval_steps=100,
        save_steps=100,
        deepspeed=str(tmp_path / "zero3.json"),
    )
    save_config(cfg, tmp_path / "zero3.yaml")
    done = torchrun_train(tmp_path / "zero3.yaml", 29535, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # 12 samples, 2 ranks x batch 2 = 4 per step: 3 steps (one process would take 6), said by rank 0
    assert done.stdout.count("completed after 3 step(s)") == 1, done.stdout[-2000:]
    assert not list((tmp_path / "zero3").glob("*.partial-*"))  # the base LM was written once, whole
    final = tmp_path / "zero3" / "final"
    saved = {part: load_file(str(final / f"{part}.safetensors")) for part in ("projector", "head")}
    adapter = load_file(str(next((final / "adapter").glob("*.safetensors"))))
    torch.manual_seed(cfg.dx_llava.train.seed)  # as the run did: the weights it started from
    model, _, _ = build_model(cfg.dx_llava, tmp_path / "zero3")
    initial = {"projector": model.projector.state_dict(), "head": model.head.state_dict()}
    for part, tensors in initial.items():
        assert {k: v.shape for k, v in saved[part].items()} == {k: v.shape for k, v in tensors.items()}
        assert all(torch.isfinite(v).all() for v in saved[part].values())
        assert any(not torch.equal(saved[part][k], v) for k, v in tensors.items()), f"{part} never moved"
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.numel() > 0 for v in adapter.values())
    assert any(v.abs().max() > 0 for v in lora_b)  # LoRA's B starts at zero: training moved it


def test_stage1_saves_the_projector_alone_and_stage2_starts_from_it(dx_data, tmp_path):
    from safetensors.torch import load_file

    from fakefinder.tasks.dx_llava.model import build_model
    from fakefinder.tasks.dx_llava.train import train

    cfg = dx_config(dx_data, tmp_path / "stage1", stage="projector", max_steps=2, save_steps=100)
    result = train(cfg)
    final = result.artifact
    assert (final / "mm_projector.safetensors").is_file()
    assert not (final / "adapter").exists() and not (final / "head.safetensors").exists()
    saved = load_file(str(final / "mm_projector.safetensors"))
    stage2 = dx_config(
        dx_data, tmp_path / "stage2", model={"pretrained_projector": str(final / "mm_projector.safetensors")}
    )
    model, _, info = build_model(stage2.dx_llava, tmp_path / "stage1")
    assert info["projector_from"].startswith("stage-1")
    assert torch.equal(model.projector[0].weight.detach(), saved["0.weight"])


def test_qlora_step_on_cpu(dx_data, tmp_path):
    import bitsandbytes  # noqa: F401  (installed by the set-up)

    from fakefinder.tasks.dx_llava.model import build_model

    cfg = dx_config(dx_data, tmp_path / "q", mode="qlora")
    model, tokenizer, _ = build_model(cfg.dx_llava, tmp_path / "q")
    kinds = {type(m).__name__ for m in model.language_model.modules()}
    assert "Linear4bit" in kinds
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and "lora_B" in n}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = _batch(model, tokenizer, dx_data, cfg)
    model.train()
    out = model(**batch)
    out["loss"].backward()
    optimizer.step()
    changed = [n for n, p in model.named_parameters() if n in lora and not torch.equal(p.detach(), lora[n])]
    assert changed and torch.isfinite(out["loss"])


def test_original_llava_checkpoint_converts_to_hf(dx_data, tmp_path):
    """A tiny original-format checkpoint (LLaMA keys + model.mm_projector) -> HF LLaVA folder: the
    HF model's text logits and projector equal the original's; fakefinder reads both formats."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM, LlavaForConditionalGeneration

    from fakefinder.tasks.dx_llava.convert import convert_original_to_hf, load_llava

    torch.manual_seed(0)
    text = {k: v for k, v in tiny_llama_config().items() if k != "model_type"}
    llama = LlamaForCausalLM(LlamaConfig(**text)).eval()
    vision = tiny_clip_vision_config()
    projector = torch.nn.Sequential(
        torch.nn.Linear(vision["hidden_size"], text["hidden_size"]),
        torch.nn.GELU(),
        torch.nn.Linear(text["hidden_size"], text["hidden_size"]),
    )
    state = {k: v.clone() for k, v in llama.state_dict().items()}
    state.update({f"model.mm_projector.{k}": v.clone() for k, v in projector.state_dict().items()})
    original = tmp_path / "original"
    original.mkdir()
    save_file(state, str(original / "model.safetensors"))
    config = {
        **text,
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava",
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": vision["hidden_size"],
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_vision_select_layer": -2,
    }
    (original / "config.json").write_text(json.dumps(config))

    hf_dir = convert_original_to_hf(original, tmp_path / "hf", vision_config=vision)
    hf = LlavaForConditionalGeneration.from_pretrained(hf_dir).eval()
    assert hf.config.image_token_index == text["vocab_size"]
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        want = llama(input_ids=ids).logits
        got = hf(input_ids=ids).logits[..., : text["vocab_size"]]
        assert torch.allclose(want, got, atol=1e-5)
        features = torch.randn(2, 3, vision["hidden_size"])
        assert torch.allclose(projector(features), hf.model.multi_modal_projector(features), atol=1e-6)

    for folder in (original, hf_dir):  # fakefinder's reader gives the same parts from either format
        parts = load_llava(folder, vision_config=vision)
        assert torch.equal(parts["projector_state"]["2.weight"], projector[2].weight)
        assert torch.equal(
            parts["lm_state"]["model.layers.1.mlp.up_proj.weight"], llama.model.layers[1].mlp.up_proj.weight
        )
        assert parts["text_config"]["hidden_size"] == text["hidden_size"]


def test_dx_llava_from_a_llava_checkpoint(dx_data, tmp_path):
    """vision_tower=llava uses the checkpoint's CLIP tower and projector; the LM equals the checkpoint's."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    from fakefinder.tasks.dx_llava.model import build_model

    torch.manual_seed(1)
    text = tiny_llama_config()
    llava = LlavaForConditionalGeneration(
        LlavaConfig(text_config=text, vision_config=tiny_clip_vision_config(), image_token_index=100)
    ).eval()
    llava.save_pretrained(tmp_path / "llava-hf")
    cfg = dx_config(
        dx_data,
        tmp_path / "out",
        mode="full",
        model={
            "llava_checkpoint": str(tmp_path / "llava-hf"),
            "vision_tower": "llava",
        },
    )
    model, tokenizer, info = build_model(cfg.dx_llava, tmp_path / "out")
    assert info["projector_from"].startswith("LLaVA checkpoint")
    assert torch.equal(model.projector[0].weight, llava.model.multi_modal_projector.linear_1.weight)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ours = model.image_tokens(pixels)
        theirs = llava.model.get_image_features(
            pixel_values=pixels, vision_feature_layer=-2, vision_feature_select_strategy="default"
        )
        theirs = theirs.pooler_output if hasattr(theirs, "pooler_output") else theirs
        theirs = torch.cat(list(theirs)) if isinstance(theirs, (list, tuple)) else theirs
        assert torch.allclose(
            ours.reshape(-1, ours.shape[-1]), theirs.reshape(-1, theirs.shape[-1]), atol=1e-5
        )
        ids = torch.tensor([[1, 20, 30, 40]])
        assert torch.allclose(
            model.language_model(input_ids=ids).logits, llava(input_ids=ids).logits, atol=1e-5
        )


def test_config_errors_name_the_key(dx_data, tmp_path):
    from fakefinder.tasks.dx_llava.model import build_model

    with pytest.raises(ConfigError, match="vision_tower"):
        build_model(dx_config(dx_data, tmp_path, model={"vision_tower": "resnet"}).dx_llava, tmp_path)
    with pytest.raises(ConfigError, match="measured_prompt"):  # a CLIP tower has no mask head
        build_model(dx_config(dx_data, tmp_path, model={"measured_prompt": True}).dx_llava, tmp_path)
    with pytest.raises(ConfigError, match="projector"):
        dx_config(dx_data, tmp_path, model={"projector": "mlp2x_relu"})
    with pytest.raises(ConfigError, match="deepspeed"):
        from fakefinder.tasks.dx_llava.train import deepspeed_config

        deepspeed_config("zero9")
    from fakefinder.tasks.dx_llava.train import deepspeed_config

    assert json.loads(Path(deepspeed_config("zero3")).read_text())["zero_optimization"]["stage"] == 3
