from pathlib import Path

import pytest
import yaml

from fakefinder.config import ConfigError, config_from_dict, load_config, parse_override, save_config


def write(path: Path, tree: dict) -> Path:
    path.write_text(yaml.safe_dump(tree))
    return path


def test_yaml_and_dotted_overrides(tmp_path):
    cfg_file = write(
        tmp_path / "c.yaml",
        {"data": {"datasets": [{"name": "a", "layout": "folder", "root": "data/a"}], "frames_per_video": 32}},
    )
    config = load_config(cfg_file, ["data.frames_per_video=16", "faces.fallback=[opencv]", "data.datasets.0.compression=c40"])
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
            {"data": {"datasets": [{"name": "a", "layout": "csv", "root": "x"}, {"name": "a", "layout": "csv", "root": "y"}]}}
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
