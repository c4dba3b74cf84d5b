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
        return timm.create_model(cfg.name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                 drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate, **cfg.kwargs)
    except TypeError as err:
        raise RecipeError(f"model {cfg.name}: {err}") from None


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
