"""State dicts: unwrapping a loaded file, fitting weights into a built model, a model's head and its
timm eval preprocessing. Each exists once; the hub, the zoo, fine-tuning and the importers use them."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from timm.data import resolve_data_config
from timm.models import adapt_input_conv

from trainkit.config.recipe import EvalCfg, KeyMapCfg
from trainkit.models.importers import map_state_dict
from trainkit.runtime.checkpoint import CheckpointError, read_weights_file

log = logging.getLogger("trainkit")


def unwrap_state_dict(state: object, path: Path | str) -> dict[str, torch.Tensor]:
    """The tensors of a loaded file: ``model``/``state_dict`` wrappers and ``module.`` prefixes removed."""
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of tensor names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def head_param_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters of ``model.get_classifier()`` (empty when the model has no such API)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    ids = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
    return {n for n, p in model.named_parameters() if id(p) in ids}


def head_state_keys(model: torch.nn.Module) -> set[str]:
    """State-dict entries of the classifier (its parameters and buffers)."""
    modules = {n.rsplit(".", 1)[0] for n in head_param_names(model)}
    return {k for k in model.state_dict() if k.rsplit(".", 1)[0] in modules}


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict (.pt/.pth/.th/.safetensors), or a trainkit checkpoint's model weights; ``model`` /
    ``state_dict`` wrappers and DataParallel's ``module.`` prefix removed."""
    return unwrap_state_dict(read_weights_file(path), path)


def load_mapped(model: torch.nn.Module, state: dict[str, torch.Tensor], key_map: KeyMapCfg, what: str) -> None:
    """``state`` renamed by ``key_map`` (trainkit.models.importers), then fitted (new head allowed)."""
    fit_state_dict(model, map_state_dict(state, model, key_map, what, allow_shape=head_state_keys(model)), what)


def first_conv_key(model: torch.nn.Module) -> str | None:
    """State-dict key of the first convolution's weight, as timm's pretrained config names it."""
    first = getattr(model, "pretrained_cfg", {}).get("first_conv")
    return f"{first}.weight" if first else None


def fit_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` strictly, except for a classifier of another class count (kept fresh) and a
    first conv of another channel count (adapted). Anything else that differs is one-line error."""
    own = model.state_dict()
    name = type(model).__name__
    key = first_conv_key(model)
    if key in state and key in own and state[key].shape[1] != own[key].shape[1]:
        log.info("%s: %s adapted from %d to %d input channels", what, key, state[key].shape[1], own[key].shape[1])
        state = dict(state, **{key: adapt_input_conv(own[key].shape[1], state[key])})
    head = head_state_keys(model)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    body = sorted(set(mismatched) - head)
    if body:
        raise CheckpointError(f"{what} does not fit {name}: {body[0]} has shape {tuple(state[body[0]].shape)}, "
                              f"expected {tuple(own[body[0]].shape)} (weights of another architecture?)")
    state = {k: v for k, v in state.items() if k not in mismatched}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in mismatched]
    if missing or unexpected:
        example = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(f"{what} does not fit {name} ({example}; {len(missing)} missing, {len(unexpected)} "
                              f"unexpected keys: weights of another architecture?)")
    if mismatched:
        log.info("%s: new classifier (%s), the backbone is pretrained", what, ", ".join(sorted(mismatched)))


def sizes_of(state: dict[str, torch.Tensor], model: torch.nn.Module) -> tuple[int, int]:
    """(classes, input channels) of ``state`` as ``model``'s architecture lays them out; the model's own
    where the state lacks the classifier or the first conv."""
    head_w = next((n for n in sorted(head_param_names(model)) if n.endswith("weight")), None)
    first_w = first_conv_key(model)
    return (int(state[head_w].shape[0]) if head_w in state else model.num_classes,
            int(state[first_w].shape[1]) if first_w in state else int(model.pretrained_cfg["input_size"][0]))


def timm_eval_cfg(model: torch.nn.Module) -> EvalCfg:
    """The eval preprocessing timm's pretrained config gives ``model`` (size, crop, interpolation, statistics)."""
    cfg = resolve_data_config({}, model=model)
    interpolation = cfg["interpolation"] if cfg["interpolation"] in ("nearest", "bilinear", "bicubic") else "bicubic"
    return EvalCfg(size=int(cfg["input_size"][-1]), crop_pct=float(cfg["crop_pct"]), interpolation=interpolation,
                   mean=list(cfg["mean"]), std=list(cfg["std"]))
