"""Create models by name (timm's registry, which also holds trainkit's own models)."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch

from trainkit.models import cifar, speednet  # noqa: F401  (register resnet*_cifar, smallcnn, speednet_cifar with timm)
from trainkit.config.schema import RecipeError
from trainkit.config.recipe import KeyMapCfg, ModelCfg


def known_model(name: str) -> bool:
    return timm.is_model(name)


def check_model_name(name: str, key: str = "model.name") -> None:
    if not known_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else " (see timm.list_models())"
        raise RecipeError(f"{key}: unknown model {name!r}{hint}")


def build_model(cfg: ModelCfg, num_classes: int, in_chans: int) -> torch.nn.Module:
    """``timm.create_model`` with the recipe's head, channels and regularisation.

    ``pretrained`` is ``zoo:<id>``, ``timm:<name>`` or a local state-dict file; its classifier
    is dropped (and freshly initialised) when the class count differs.
    """
    check_model_name(cfg.name)
    kwargs = dict(cfg.kwargs)
    try:
        model = timm.create_model(cfg.name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                  drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate, **kwargs)
    except TypeError as err:
        raise RecipeError(f"model {cfg.name}: {err}") from None
    if cfg.pretrained:
        load_pretrained(model, cfg.pretrained, cfg.name, cfg.pretrained_map)
    return model


def load_pretrained(model: torch.nn.Module, spec: str | Path, arch: str, key_map: KeyMapCfg | None = None) -> None:
    """Load ``zoo:<id>``, ``timm:<name>`` or a local .pt/.pth/.safetensors file into ``model`` (see
    trainkit.zoo.cards); ``key_map`` maps a foreign file's tensor names (model.pretrained_map)."""
    from trainkit.zoo.cards import load_weights  # late: the zoo imports this module's check_model_name

    load_weights(model, str(spec), arch=arch, key_map=key_map)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
