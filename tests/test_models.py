import numpy as np
import pytest
import torch
from PIL import Image

import fakefinder  # noqa: F401  (arms the torchvision fix before timm loads)
from fakefinder.tasks.classification.model import UnknownModelError, create, list_models
from fakefinder.tasks.classification.networks import FrequencyTransform
from fakefinder.tasks.classification.pretrained import (
    WeightsError,
    lite0_package_file,
    map_lite0_keys,
    read_state_dict,
)


def test_presets_and_any_timm_name_build_detectors():
    assert {
        "baseline",
        "efficientnet_b4",
        "legacy_xception",
        "swin_tiny_patch4_window7_224",
        "convnext_tiny",
        "resnet50",
        "efficientnet_lite0",
    } <= set(list_models())
    model = create("test_efficientnet", dropout=0.3).eval()
    x = torch.randn(2, 3, 32, 32)
    features = model.features(x)
    assert features.shape == (2, model.num_features)
    assert torch.allclose(model.classifier(features), model(x))
    assert model(x).shape == (2,)
    assert model.head[0].p == 0.3


@pytest.mark.parametrize("name", ["test_efficientnet", "test_vit"])
def test_mask_head_predicts_a_map_beside_the_same_logit(name):
    model = create(name, mask_head=True, frequency="srm" if name == "test_efficientnet" else None).eval()
    size = 64 if name == "test_efficientnet" else model.backbone.default_cfg["input_size"][-1]
    x = torch.randn(2, 3, size, size)
    logits, mask = model(x, return_mask=True)
    assert mask.ndim == 4 and mask.shape[:2] == (2, 1) and mask.shape[2] == mask.shape[3] > 1
    assert torch.allclose(logits, model(x), atol=1e-5)  # the mask path does not change the decision
    with pytest.raises(ValueError, match="no mask head"):
        create(name)(x, return_mask=True)


@pytest.mark.parametrize("kind", ["srm", "dct", "fft"])
def test_dual_branch_fuses_frequency_features(kind):
    model = create("test_efficientnet", frequency=kind).eval()
    plain = create("test_efficientnet").eval()
    assert model.num_features == plain.num_features + model.frequency.num_features
    assert model(torch.randn(2, 3, 64, 64)).shape == (2,)


def test_srm_filters_ignore_flat_regions():
    flat = torch.full((1, 3, 16, 16), 0.7)
    assert FrequencyTransform("srm")(flat)[..., 3:-3, 3:-3].abs().max() < 1e-6


def test_unknown_model_lists_close_names():
    with pytest.raises(UnknownModelError) as info:
        create("efficientnet_b44")
    assert "efficientnet_b4" in str(info.value)


def test_offline_lite0_weights_are_mapped_and_recognise_espresso():
    from skimage import data

    model = create("efficientnet_lite0", pretrained="package:efficientnet_lite0").eval()
    report = model.load_report
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert report.loaded == len(model.backbone.state_dict())
    # the mapped backbone + the package's own classifier layer = the ImageNet model
    state = read_state_dict(lite0_package_file())
    image = np.asarray(Image.fromarray(data.coffee()).resize((224, 224))) / 255.0
    x = torch.tensor((image - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], dtype=torch.float32).permute(
        2, 0, 1
    )[None]
    with torch.no_grad():
        logits = torch.nn.functional.linear(model.features(x), state["_fc.weight"], state["_fc.bias"])
    assert logits.argmax().item() == 967  # espresso


def test_local_weights_file_reports_key_differences(tmp_path):
    import timm

    source = timm.create_model("test_efficientnet", num_classes=5)
    state = source.state_dict()
    state["extra.weight"] = torch.zeros(3)
    del state["conv_stem.weight"]
    torch.save({"state_dict": state}, tmp_path / "w.pth")
    model = create("test_efficientnet", pretrained=str(tmp_path / "w.pth"))
    report = model.load_report
    assert report.missing == ["conv_stem.weight"]
    assert report.unexpected == ["extra.weight"]
    assert torch.equal(model.backbone.bn1.weight, source.bn1.weight)
    with pytest.raises(WeightsError, match="not found"):
        create("test_efficientnet", pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(WeightsError, match="EfficientNet-Lite0"):
        create("test_efficientnet", pretrained="package:efficientnet_lite0")


def test_lite0_key_mapping_by_hand():
    mapped = map_lite0_keys(
        {
            "_blocks.0._depthwise_conv.weight": 1,
            "_blocks.1._expand_conv.weight": 2,
            "_blocks.2._bn2.bias": 3,
            "_conv_stem.weight": 4,
            "_bn1.weight": 5,
        },
        [1, 2],
    )
    assert mapped == {
        "blocks.0.0.conv_dw.weight": 1,
        "blocks.1.0.conv_pw.weight": 2,
        "blocks.1.1.bn3.bias": 3,
        "conv_stem.weight": 4,
        "bn2.weight": 5,
    }
