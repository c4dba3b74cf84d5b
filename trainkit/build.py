"""Create models by name (timm's registry, which also holds trainkit's own models)."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch

from . import models, speednet  # noqa: F401  (register resnet*_cifar, smallcnn, speednet_cifar with timm)
from .config import RecipeError
from .recipe import ModelCfg


def known_model(name: str) -> bool:
    return timm.is_model(name)


def check_model_name(name: str, key: str = "model.name") -> None:
    if not known_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else " (see timm.list_models())"
        raise RecipeError(f"{key}: unknown model {name!r}{hint}")


def build_model(cfg: ModelCfg, num_classes: int, in_chans: int) -> torch.nn.Module:
    """``timm.create_model`` with the recipe's head, channels and regularisation.

    ``pretrained`` names a local state-dict file; its classifier is dropped
    (and freshly initialised) when the class count differs.
    """
    check_model_name(cfg.name)
    kwargs = dict(cfg.kwargs)
    try:
        model = timm.create_model(cfg.name, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                  drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate, **kwargs)
    except TypeError as err:
        raise RecipeError(f"model {cfg.name}: {err}") from None
    if cfg.pretrained:
        load_pretrained(model, Path(cfg.pretrained))
    return model


def load_pretrained(model: torch.nn.Module, path: Path) -> None:
    """Load a local .pt/.pth/.safetensors state dict (or trainkit checkpoint) into ``model``."""
    from .checkpoint import CheckpointError

    if not path.is_file():
        raise CheckpointError(f"model.pretrained: file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure is the same user error
            raise CheckpointError(f"model.pretrained: cannot load {path}: {str(err).splitlines()[0]}") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    dropped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_keys = {f"{n}" for n, p in model.named_parameters() if head is not None and any(p is q for q in head.parameters())}
    if set(dropped) - head_keys:
        bad = sorted(set(dropped) - head_keys)[0]
        raise CheckpointError(f"model.pretrained: {path} does not fit {type(model).__name__}: "
                              f"{bad} has shape {tuple(state[bad].shape)}, expected {tuple(own[bad].shape)}")
    for k in dropped:   # a different class count: keep the backbone, new head
        del state[k]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in dropped]
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(f"model.pretrained: {path} does not fit {type(model).__name__} ({what}, "
                              f"{len(missing)} missing, {len(unexpected)} unexpected keys)")


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
