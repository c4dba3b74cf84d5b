"""``speednet_cifar``: a network built for accuracy per second on 32 px images.

Keller Jordan's airbench (public, MIT) reaches 94% on CIFAR-10 in seconds on a GPU;
this keeps its ideas that pay off on any hardware:

* a 2x2 *patch-whitening* stem whose weights come from the training data
  (eigenvectors of the 2x2 patch covariance, +/- so GELU keeps both signs) and
  are frozen: the first layer starts decorrelated instead of learning to be;
* three conv groups (conv, max-pool, BN, GELU, conv, BN, GELU) at widths
  ``widths``: few layers, each wide enough to use the hardware well;
* a global max pool and a bias-free linear head scaled down (logits start small).

The stem needs data: :meth:`SpeedNet.init_from_data` sets it from a batch of
normalised training images (the trainer calls it once, before the first step,
for any model that has the method). Its weights are ordinary parameters (frozen),
so checkpoints carry them and evaluation needs no data-dependent step.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import register_model

from trainkit.models.cifar import CIFAR_MEAN, CIFAR_STD, _Classifier, _check_kwargs, _no_hub, whitening_filters

default_cfgs = {"speednet_cifar": dict(input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear",
                                       mean=CIFAR_MEAN, std=CIFAR_STD, first_conv="whiten", classifier="head",
                                       num_classes=10)}


class ConvGroup(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        # Pool right after the first conv: the second conv and both BNs run at a quarter of the pixels.
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(cout),
                         nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.GELU())


class SpeedNet(_Classifier):
    head_name = "head"

    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, int, int] = (64, 256, 256),
                 drop_rate: float = 0.0, head_scale: float = 1 / 9):
        super().__init__()
        self.num_classes, self.drop_rate, self.head_scale = num_classes, drop_rate, head_scale
        patch_dim = in_chans * 2 * 2
        self.whiten = nn.Conv2d(in_chans, 2 * patch_dim, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)   # set from data, then frozen
        w1, w2, w3 = widths
        self.layers = nn.Sequential(ConvGroup(2 * patch_dim, w1), ConvGroup(w1, w2), ConvGroup(w2, w3))
        self.num_features = self.head_hidden_size = w3
        self.head = nn.Linear(w3, num_classes, bias=False) if num_classes > 0 else nn.Identity()
        self.pretrained_cfg = self.default_cfg = dict(default_cfgs["speednet_cifar"], num_classes=num_classes,
                                                      input_size=(in_chans, 32, 32))

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Whitening stem from normalised images [N, C, H, W]: W = +/- eigvec / sqrt(eigval + eps)."""
        filters = whitening_filters(images, 2, self.whiten.out_channels, eps)   # every eigenvector, both signs
        self.whiten.weight.copy_(filters.to(self.whiten.weight))
        self.whiten.bias.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(F.gelu(self.whiten(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x) * self.head_scale


@register_model
def speednet_cifar(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.0,
                   widths: tuple[int, int, int] | list[int] = (64, 256, 256), **kwargs) -> SpeedNet:
    """airbench-style network for 32 px images; ``widths`` of the three conv groups."""
    _no_hub("speednet_cifar", pretrained)
    _check_kwargs("speednet_cifar", **kwargs)
    if len(widths) != 3:
        raise TypeError(f"speednet_cifar: widths needs 3 values, got {widths!r}")
    return SpeedNet(num_classes=num_classes, in_chans=in_chans, widths=tuple(widths), drop_rate=drop_rate or 0.0)
