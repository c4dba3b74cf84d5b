"""Create models by name (timm's registry, which also holds trainkit's own models).

Importing this module fills :data:`trainkit.config.registry.MODELS`: it answers with timm's
registry, after our own architectures (resnet*_cifar, smallcnn, speednet_cifar) registered there.
"""

from __future__ import annotations

import timm
import torch

from trainkit.config.recipe import ModelCfg
from trainkit.config.registry import MODELS
from trainkit.config.schema import RecipeError
from trainkit.models import cifar, speednet  # noqa: F401  (register resnet*_cifar, smallcnn, speednet_cifar with timm)

MODELS.answer_with(timm.is_model, timm.list_models)


def check_model_name(name: str, key: str = "model.name") -> None:
    MODELS.check(name, key)


def create_model(cfg: ModelCfg, num_classes: int, in_chans: int) -> torch.nn.Module:
    """``timm.create_model`` with the recipe's head, channels and regularisation, randomly initialised.

    ``cfg.pretrained`` is not read here: :func:`trainkit.models.hub.build_model` fits those weights.
    """
    check_model_name(cfg.name)
    try:
        model = timm.create_model(cfg.name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                  drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate, **cfg.kwargs)
    except TypeError as err:
        raise RecipeError(f"model {cfg.name}: {err}") from None
    INITS[cfg.init](model)
    set_batchnorm(model, momentum=cfg.bn_momentum, eps=cfg.bn_eps)
    return model


def dirac_init(model: torch.nn.Module) -> None:
    """airbench's conv init: each 3x3 conv with at least as many outputs as inputs starts with its
    first in-channels outputs as the identity (``dirac_``), so a deep stack starts close to a shallow
    one; the other outputs keep their random init. Strided, grouped and 1x1 convs are left alone."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3) and m.groups == 1 \
                    and m.stride == (1, 1) and m.out_channels >= m.in_channels and m.weight.requires_grad:
                torch.nn.init.dirac_(m.weight[:m.in_channels])


# model.init -> what happens to the freshly built model's weights
INITS = {"default": lambda model: None, "dirac": dirac_init}


def set_batchnorm(model: torch.nn.Module, *, momentum: float | None, eps: float | None) -> None:
    """``model.bn_momentum`` / ``model.bn_eps`` on every BatchNorm layer (None: leave the model's own)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            if momentum is not None:
                m.momentum = momentum
            if eps is not None:
                m.eps = eps


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
