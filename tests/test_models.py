"""trainkit.models.cifar: shapes through timm's registry, the paper's parameter counts, the real
akamaster weights loading strictly and classifying real CIFAR-10 JPEGs, and timm's classifier API."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from PIL import Image

from trainkit.models.cifar import ShortcutA, load_akamaster_state_dict

SHARED = Path(os.environ.get("TRAINKIT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
WEIGHTS = SHARED / "weights" / "cifar10-resnet"
CIFAR_TEST = SHARED / "data" / "cifar10-jpeg" / "test"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_MEAN, CIFAR_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

RESNETS = ["resnet20_cifar", "resnet32_cifar", "resnet44_cifar", "resnet56_cifar", "resnet110_cifar"]
ALL_MODELS = RESNETS + ["smallcnn"]
# Trainable parameters of akamaster's released state dicts (conv/linear/BN affine, no running stats).
PAPER_PARAMS = {"resnet20_cifar": 269_722, "resnet32_cifar": 464_154, "resnet44_cifar": 658_586}
AKAMASTER_FILES = {"resnet20_cifar": "resnet20-12fca82f.th", "resnet32_cifar": "resnet32-d509ac18.th",
                   "resnet44_cifar": "resnet44-014dd654.th"}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weights_file(name: str) -> Path:
    path = WEIGHTS / AKAMASTER_FILES[name]
    if not path.is_file():
        pytest.skip(f"{path} not present (akamaster's CIFAR ResNet weights in ../shared/weights/cifar10-resnet)")
    return path


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("in_chans,num_classes", [(3, 10), (1, 7)])
def test_create_model_shapes(name, in_chans, num_classes):
    model = timm.create_model(name, num_classes=num_classes, in_chans=in_chans).eval()
    sizes = (32, 28) if name == "smallcnn" else (32,)
    with torch.no_grad():
        for size in sizes:
            assert model(torch.randn(2, in_chans, size, size)).shape == (2, num_classes)
    assert model.pretrained_cfg["input_size"][0] == in_chans


@pytest.mark.parametrize("size", [16, 17, 28, 32, 40])
def test_smallcnn_any_size_from_16px(size):
    model = timm.create_model("smallcnn", num_classes=10, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size)).shape == (1, 10)


@pytest.mark.parametrize("name,expected", PAPER_PARAMS.items())
def test_parameter_counts_match_paper_and_weights(name, expected):
    n = count_params(timm.create_model(name))
    assert abs(n - expected) / expected < 0.01, f"{name}: {n} parameters, paper/weights say {expected}"
    assert n == expected  # the architecture is the released one, so the count is exact
    path = WEIGHTS / AKAMASTER_FILES[name]
    if path.is_file():  # the released weights have exactly these trainable tensors
        state = load_akamaster_state_dict(path)
        assert sum(v.numel() for k, v in state.items() if "running_" not in k and "num_batches" not in k) == n


@pytest.mark.parametrize("name", ALL_MODELS)
def test_conv_before_bn_has_no_bias(name):
    model = timm.create_model(name)
    modules = list(model.modules())
    pairs = 0
    for module, following in zip(modules, modules[1:]):
        if isinstance(module, nn.Conv2d) and isinstance(following, nn.BatchNorm2d):
            assert module.bias is None, f"{name}: {module} followed by BatchNorm has a bias"
            pairs += 1
    assert pairs == sum(isinstance(m, nn.Conv2d) for m in modules)  # every conv is followed by BN here


def test_option_a_shortcut_is_parameter_free():
    model = timm.create_model("resnet20_cifar")
    shortcuts = [m for m in model.modules() if isinstance(m, ShortcutA)]
    assert len(shortcuts) == 2  # first block of layer2 and of layer3
    assert all(count_params(m) == 0 and not list(m.buffers()) for m in shortcuts)
    x = torch.randn(2, 16, 8, 8)
    out = ShortcutA(32)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])  # the input sits in the middle, zeros around it
    assert not out[:, :8].any() and not out[:, 24:].any()


@pytest.mark.parametrize("name", list(AKAMASTER_FILES))
def test_akamaster_weights_load_strictly(name):
    model = timm.create_model(name, num_classes=10, in_chans=3)
    model.load_state_dict(load_akamaster_state_dict(weights_file(name)), strict=True)


def test_load_akamaster_rejects_other_formats(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="plain.pt"):
        load_akamaster_state_dict(path)


def load_cifar_subset(per_class: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` test JPEGs of every class, normalised as akamaster's training was."""
    if not CIFAR_TEST.is_dir():
        pytest.skip(f"{CIFAR_TEST} not present (CIFAR-10 JPEGs in ../shared/data/cifar10-jpeg)")
    images, labels = [], []
    for label, cls in enumerate(CIFAR_CLASSES):
        for file in sorted((CIFAR_TEST / cls).glob("*.jpg"))[:per_class]:
            images.append(np.asarray(Image.open(file).convert("RGB"), dtype=np.float32) / 255.0)
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    x = (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return x, torch.tensor(labels)


def test_pretrained_resnet20_classifies_real_cifar10_jpegs():
    model = timm.create_model("resnet20_cifar", num_classes=10, in_chans=3).eval()
    model.load_state_dict(load_akamaster_state_dict(weights_file("resnet20_cifar")), strict=True)
    x, y = load_cifar_subset(per_class=50)
    with torch.no_grad():
        top1 = (model(x).argmax(1) == y).float().mean().item()
    print(f"resnet20_cifar (akamaster weights) top-1 on {len(y)} CIFAR-10 JPEG test images: {top1:.2%}")
    assert top1 > 0.75  # ~91.7% on lossless CIFAR-10; JPEG costs about 9-10 points


@pytest.mark.parametrize("name", ["resnet20_cifar", "smallcnn"])
def test_reset_classifier_keeps_backbone(name):
    model = timm.create_model(name, num_classes=10)
    head = model.get_classifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_classifier(7)
    assert model.get_classifier() is not head and model.get_classifier().out_features == 7
    assert model.get_classifier() is getattr(model, model.pretrained_cfg["classifier"])
    after = model.state_dict()
    prefix = model.pretrained_cfg["classifier"] + "."
    assert all(torch.equal(after[k], v) for k, v in before.items() if not k.startswith(prefix))
    model.eval()
    x = torch.randn(2, model.pretrained_cfg["input_size"][0], 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features
        assert model.forward_head(features, pre_logits=True).shape == (2, model.head_hidden_size)
    model.reset_classifier(0)  # timm's convention: no head, the model returns pooled features
    with torch.no_grad():
        assert model(x).shape == (2, model.head_hidden_size)


def test_resnet_num_features_and_cfg():
    model = timm.create_model("resnet20_cifar")
    assert model.num_features == 64
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 32, 32) and cfg["crop_pct"] == 1.0 and cfg["interpolation"] == "bilinear"
    assert cfg["mean"] == CIFAR_MEAN and cfg["std"] == CIFAR_STD
    assert cfg["first_conv"] == "conv1" and cfg["classifier"] == "linear"
    assert timm.data.resolve_data_config(model=model)["mean"] == CIFAR_MEAN
    small = timm.create_model("smallcnn").pretrained_cfg
    assert small["input_size"] == (1, 28, 28) and small["mean"] == (0.2860,) and small["std"] == (0.3530,)


def test_drop_path_rate_rejected_unless_unset_or_zero():
    with pytest.raises(TypeError, match="drop_path_rate"):
        timm.create_model("resnet20_cifar", drop_path_rate=0.1)
    timm.create_model("resnet20_cifar", drop_path_rate=None)  # timm drops None kwargs
    timm.create_model("resnet20_cifar", drop_path_rate=0.0)


def test_unknown_kwarg_rejected():
    with pytest.raises(TypeError, match="bogus"):
        timm.create_model("resnet20_cifar", bogus=1)
    with pytest.raises(TypeError, match="bogus"):
        timm.create_model("smallcnn", bogus=1)


def test_hub_pretrained_points_to_zoo():
    with pytest.raises(ValueError, match="zoo"):
        timm.create_model("resnet20_cifar", pretrained=True)


def test_drop_rate_only_acts_in_training():
    model = timm.create_model("resnet20_cifar", drop_rate=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
