"""trainkit's own architectures, registered in timm's registry so that
``timm.create_model("resnet20_cifar", num_classes=10, in_chans=3)`` works like any timm model.

* ``resnet{20,32,44,56,110}_cifar``: He et al. 2015, section 4.2. Three stages of
  16/32/64 channels, n = (depth - 2) / 6 basic blocks each, "option A" shortcuts
  (subsample and zero-pad channels: no parameters), global average pooling, a
  linear head. Parameter names match akamaster/pytorch_resnet_cifar10, so those
  weights load after stripping ``module.``.
* ``smallcnn``: a fast 4-conv network for 28-32 px data (Fashion-MNIST quickstart).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import register_model

CIFAR_CFG = dict(input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear", mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225), first_conv="conv1", classifier="linear", num_classes=10)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)  # BN follows: a bias is redundant


class ShortcutA(nn.Module):
    """Option A: take every second pixel and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_chans: int):
        super().__init__()
        self.pad = extra_chans // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.shortcut = ShortcutA(cout - cin) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _Classifier(nn.Module):
    """timm's classifier API, shared by our models (head attribute named by ``head_name``)."""

    head_name = "head"
    num_features: int
    drop_rate: float

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.head_name)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        setattr(self, self.head_name, head)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.dropout(x, self.drop_rate, self.training) if self.drop_rate else x
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class CifarResNet(_Classifier):
    head_name = "linear"

    def __init__(self, depth: int, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.num_classes, self.num_features, self.drop_rate = num_classes, 64, drop_rate
        self.conv1, self.bn1 = conv3x3(in_chans, 16), nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.linear = nn.Linear(64, num_classes)
        self.pretrained_cfg = self.default_cfg = dict(CIFAR_CFG, input_size=(in_chans, 32, 32))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return x.mean((2, 3))


class SmallCNN(_Classifier):
    """conv-conv-pool x2, then a 2-layer MLP head: ~0.1M parameters, thousands of img/s on 2 cores."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, drop_rate: float = 0.0, width: int = 32):
        super().__init__()
        w = width
        self.num_classes, self.drop_rate, self.num_features = num_classes, drop_rate, 128

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*block(in_chans, w), *block(w, w), nn.MaxPool2d(2),
                                      *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
                                      nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                                      nn.Linear(2 * w * 16, 128), nn.ReLU(inplace=True))
        self.head = nn.Linear(128, num_classes)
        self.pretrained_cfg = self.default_cfg = dict(input_size=(in_chans, 28, 28), crop_pct=1.0,
                                                      interpolation="bilinear", mean=(0.2860,), std=(0.3530,),
                                                      first_conv="features.0", classifier="head",
                                                      num_classes=num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _no_hub(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"{name} has no timm hub weights: use model.pretrained=<local file> (or a zoo card)")


# Arguments timm's create_model passes to every entrypoint; they concern hub weights only.
TIMM_INTERNAL = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _check_kwargs(name: str, drop_path_rate: float | None = None, **unknown) -> None:
    for key in TIMM_INTERNAL:
        unknown.pop(key, None)
    if drop_path_rate:
        raise TypeError(f"{name} does not support drop_path_rate (no residual branches to drop per sample)")
    if unknown:
        raise TypeError(f"{name} got an unexpected argument {next(iter(unknown))!r}")


def _cifar_resnet(depth: int):
    name = f"resnet{depth}_cifar"

    def create(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0,
               **kwargs) -> CifarResNet:
        _no_hub(name, pretrained)
        _check_kwargs(name, **kwargs)
        return CifarResNet(depth, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate or 0.0)

    create.__name__ = name
    create.__doc__ = f"ResNet-{depth} for 32 px inputs (He et al. 2015, section 4.2, option-A shortcuts)."
    return register_model(create)


resnet20_cifar = _cifar_resnet(20)
resnet32_cifar = _cifar_resnet(32)
resnet44_cifar = _cifar_resnet(44)
resnet56_cifar = _cifar_resnet(56)
resnet110_cifar = _cifar_resnet(110)


@register_model
def smallcnn(pretrained: bool = False, num_classes: int = 10, in_chans: int = 1, drop_rate: float = 0.0,
             width: int = 32, **kwargs) -> SmallCNN:
    """A small fast CNN for 28-32 px images (Fashion-MNIST quickstart)."""
    _no_hub("smallcnn", pretrained)
    _check_kwargs("smallcnn", **kwargs)
    return SmallCNN(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate or 0.0, width=width)


def load_akamaster_state_dict(path) -> dict:
    """State dict of akamaster/pytorch_resnet_cifar10 weights, ``module.`` prefix removed."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise ValueError(f"{path}: expected {{'state_dict': ...}} as written by akamaster/pytorch_resnet_cifar10")
    return {k.removeprefix("module."): v for k, v in data["state_dict"].items()}
