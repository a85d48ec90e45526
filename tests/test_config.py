import json
from pathlib import Path

import pytest
import yaml

from fakefinder.config import (
    ConfigError,
    config_from_dict,
    config_to_yaml,
    load_config,
    parse_override,
    save_config,
    set_key,
)


def write(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree))
    return path


def test_yaml_and_dotted_overrides(tmp_path):
    cfg_file = write(
        tmp_path / "c.yaml",
        {"data": {"datasets": [{"name": "a", "layout": "folder", "root": "data/a"}], "frames_per_video": 32}},
    )
    config = load_config(
        cfg_file, ["data.frames_per_video=16", "faces.fallback=[opencv]", "data.datasets.0.compression=c40"]
    )
    assert config.data.frames_per_video == 16
    assert config.faces.fallback == ["opencv"]
    assert config.data.datasets[0].compression == "c40"
    # a relative dataset root is relative to the config file, not to the working directory
    assert config.data.datasets[0].root == (tmp_path / "data/a").resolve()


def test_unknown_key_names_the_key_and_a_close_match(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.frams_per_video=16"])
    message = str(info.value)
    assert "unknown key 'data.frams_per_video'" in message
    assert "did you mean 'data.frames_per_video'" in message


def test_unknown_key_in_yaml_file_names_the_file(tmp_path):
    cfg_file = write(tmp_path / "bad.yaml", {"faces": {"sise": 10}})
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file)
    assert "bad.yaml" in str(info.value)
    assert "faces.sise" in str(info.value)
    assert "faces.size" in str(info.value)


def test_unknown_key_inside_a_list_item():
    with pytest.raises(ConfigError, match=r"data\.datasets\.0\.roots"):
        config_from_dict({"data": {"datasets": [{"name": "a", "layout": "csv", "roots": "x"}]}})


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("data.frames_per_video=0", "data.frames_per_video"),
        ("faces.select=biggest", "faces.select"),
        ("data.split.train=0.9", "sum to 1"),
        ("prepare.manifest_name=m.txt", "manifest_name"),
    ],
)
def test_bad_values_are_reported_with_their_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(None, [override])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("data.frames_per_video")
    with pytest.raises(ConfigError, match="empty key"):
        parse_override("data..x=1")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(bad)


def test_duplicate_dataset_names_rejected():
    with pytest.raises(ConfigError, match="unique"):
        config_from_dict(
            {
                "data": {
                    "datasets": [
                        {"name": "a", "layout": "csv", "root": "x"},
                        {"name": "a", "layout": "csv", "root": "y"},
                    ]
                }
            }
        )


def test_margin_reads_as_fraction_or_factor():
    assert config_from_dict({"faces": {"margin": 0.2}}).faces.scale == pytest.approx(1.2)
    assert config_from_dict({"faces": {"margin": 1.3}}).faces.scale == pytest.approx(1.3)


def test_saved_config_round_trips(tmp_path):
    config = load_config(None, ["faces.size=128", "data.split.seed=7"])
    path = save_config(config, tmp_path / "config.yaml")
    again = load_config(path)
    assert again == config


def test_assignments_are_checked_like_files():
    config = config_from_dict({})
    with pytest.raises(ConfigError, match="unknown config section 'trian'"):
        config.trian = {"lr": 1}
    with pytest.raises(ConfigError, match="unknown task 'nonsense'"):
        config.task = "nonsense"
    with pytest.raises(ConfigError, match=r"dx_llava\.train\.lr: Input should be greater than 0"):
        config.dx_llava = {"train": {"lr": -1}}
    with pytest.raises(ConfigError, match="task: Input should be a valid string"):
        config_from_dict({"task": ["a"]})


# ---------------------------------------------------------------------------------------------
# renamed keys and per-kind configs


@pytest.mark.parametrize(
    "old, value, new, expected",
    [
        ("llm.lora.lora_r", 4, "llm.lora.r", 4),
        ("llm.lora.bnb_4bit_compute_dtype", "float32", "llm.lora.compute_dtype", "fp32"),
        ("llm.lora.use_nested_quant", True, "llm.lora.double_quant", True),
        ("llm.train.report_to", ["none"], "llm.train.trackers", []),
        ("dx_llava.train.lora_r", 4, "dx_llava.lora.r", 4),
        ("dx_llava.train.compute_dtype", "fp32", "dx_llava.lora.compute_dtype", "fp32"),
        ("detector.train.batch", 8, "object_detector.train.batch_size", 8),
        ("detector.train.lr0", 0.02, "object_detector.train.lr", 0.02),
        ("detector.train.workers", 0, "object_detector.train.num_workers", 0),
        ("diffusion.lora.rank", 4, "diffusion.lora.r", 4),
        ("diffusion.train.checkpoint_steps", 5, "diffusion.train.save_steps", 5),
        ("diffusion.sample.every", 7, "diffusion.train.eval_steps", 7),
        ("train.save_every_steps", 3, "train.save_steps", 3),
        ("train.logging.log_every_steps", 5, "train.logging_steps", 5),
    ],
)
def test_a_renamed_key_keeps_working_in_files_and_overrides_with_a_note(tmp_path, old, value, new, expected):
    from fakefinder.config import RENAMED_KEYS

    kind = {
        "llm": "llm_lora",
        "dx_llava": "dx_llava",
        "detector": "object_detector",
        "diffusion": "text_to_image_lora",
        "train": "deepfake_detector",
    }[old.split(".")[0]]
    tree: dict = {"task": kind}
    set_key(tree, old, value)
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(tree))
    for config in (load_config(path), load_config(None, [f"task={kind}", f"{old}={json.dumps(value)}"])):
        node = config
        for part in new.split("."):
            node = getattr(node, part)
        assert node == expected
        assert config.notes == [f"'{old}' is called '{new}' now"] and RENAMED_KEYS[old].new == new
        node = config.model_dump(mode="json")  # saved under the new name only
        for part in old.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        assert node == {}


def test_old_logging_switches_become_the_tracker_list():
    config = config_from_dict(
        {
            "train": {
                "logging": {"tensorboard": False, "wandb_project": "p", "wandb_entity": "me", "plots": False}
            }
        }
    )
    assert (config.train.trackers, config.train.tracker_project, config.train.tracker_entity) == (
        ["wandb"],
        "p",
        "me",
    )
    assert config.train.plots is False and "logging" not in yaml.safe_load(config_to_yaml(config))["train"]


def test_a_config_holds_its_kinds_sections_only():
    llm = config_from_dict({"task": "llm_lora", "train": {"epochs": 3}, "faces": {"size": 64}})
    assert list(llm.model_dump()) == ["task", "evaluate", "predict", "llm"]
    assert "section 'train' is left out: llm_lora configs do not read it" in llm.notes
    assert set(yaml.safe_load(config_to_yaml(llm))) == {"task", "evaluate", "predict", "llm"}
    detector = config_from_dict({})
    assert list(detector.model_dump()) == [
        "task",
        "data",
        "faces",
        "prepare",
        "model",
        "augment",
        "train",
        "evaluate",
        "predict",
    ]
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        config_from_dict({"task": "llm_lora", "trian": {}})  # a typo is still an error, not a note


def test_a_saved_section_from_an_older_file_is_read_under_the_new_names():
    from fakefinder.config import renamed_flat, section_from_saved
    from fakefinder.tasks.llm_lora.config import LlmConfig

    section, ignored = section_from_saved(
        LlmConfig,
        {"lora": {"lora_r": 4, "use_nested_quant": True, "bnb_4bit_compute_dtype": "float32"}},
        "x",
        "llm",
    )
    assert (section.lora.r, section.lora.double_quant, section.lora.compute_dtype, ignored) == (
        4,
        True,
        "fp32",
        [],
    )
    assert renamed_flat({"diffusion.lora.rank": 4, "diffusion.train.lr": 0.1}) == {
        "diffusion.lora.r": 4,
        "diffusion.train.lr": 0.1,
    }


def test_the_renamed_detector_section_keeps_working_with_a_note():
    from fakefinder.config import renamed_flat

    config = config_from_dict({"task": "object_detector", "detector": {"train": {"epochs": 3, "batch": 4}}})
    assert (config.object_detector.train.epochs, config.object_detector.train.batch_size) == (3, 4)
    assert config.notes == [
        "'detector.train.batch' is called 'object_detector.train.batch_size' now",
        "section 'detector' is called 'object_detector' now",
    ]
    assert "detector" not in config.model_dump() and "object_detector" in config.model_dump()
    override = load_config(None, ["task=object_detector", "detector.train.epochs=5"])
    assert override.object_detector.train.epochs == 5
    both = config_from_dict(
        {
            "task": "object_detector",
            "detector": {"train": {"epochs": 3}},
            "object_detector": {"train": {"epochs": 7}},
        }
    )
    assert both.object_detector.train.epochs == 7
    assert "'detector.train.epochs' and 'object_detector.train.epochs' are both given: " in " ".join(
        both.notes
    )
    assert renamed_flat({"detector.train.lr0": 0.1, "detector.train.epochs": 2}) == {
        "object_detector.train.lr": 0.1,
        "object_detector.train.epochs": 2,
    }
