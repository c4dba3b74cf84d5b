"""Model soups (Wortsman et al. 2022): average the weights of fine-tuned checkpoints of one architecture.

* uniform: the plain average of every checkpoint.
* greedy: candidates sorted by their own held-out top-1, best first; each next one joins
  the soup only if the soup's held-out top-1 does not drop.

Averaged weights come with averaged BatchNorm statistics, which need not match the
averaged network: ``recompute_bn`` re-estimates them on a few training batches.
The held-out split is the recipe's ``val`` (never ``test``: choosing on test would make
the reported test figure optimistic).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

import torch

from trainkit.config.recipe import parse_recipe
from trainkit.data.sources import val_is_test
from trainkit.data.loaders import LoaderSettings, make_loader
from trainkit.eval.loop import evaluate
from trainkit.eval.pipeline import EvalOptions, data_of, eval_loader, loader_settings, open_splits
from trainkit.models.hub import from_checkpoint
from trainkit.runtime.checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint

log = logging.getLogger("trainkit")


def load_candidates(paths: list[str]) -> list[dict]:
    """The checkpoints, checked to share architecture, classes and parameter shapes."""
    ckpts = [load_checkpoint(resolve_checkpoint(p, "best")) for p in paths]
    first = ckpts[0]
    for path, c in zip(paths[1:], ckpts[1:]):
        if c["arch"] != first["arch"] or c["classes"] != first["classes"]:
            raise CheckpointError(f"soup: {path} is a {c['arch']} on {len(c['classes'])} classes, but {paths[0]} is "
                                  f"a {first['arch']} on {len(first['classes'])}: a soup needs one architecture")
        shapes = {k: tuple(v.shape) for k, v in c["model"].items()}
        if shapes != {k: tuple(v.shape) for k, v in first["model"].items()}:
            raise CheckpointError(f"soup: {path} has other parameter names or shapes than {paths[0]}")
    return ckpts


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of floating-point entries (summed in float64); others (counters) from the first."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            total = torch.zeros_like(first, dtype=torch.float64)
            for s in states:
                total += s[key].double()
            out[key] = (total / len(states)).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


Score = Callable[[dict[str, torch.Tensor]], float]   # state dict -> held-out top-1 (%)


def greedy_soup(states: list[dict[str, torch.Tensor]], score: Score,
                names: list[str] | None = None) -> tuple[dict[str, torch.Tensor], list[int], list[dict]]:
    """(soup, chosen indices, one log row per candidate); ``score`` returns held-out top-1."""
    names = names or [str(i) for i in range(len(states))]
    own = [score(s) for s in states]
    order = sorted(range(len(states)), key=lambda i: -own[i])
    chosen, best = [order[0]], own[order[0]]
    rows = [{"candidate": names[order[0]], "own_top1": own[order[0]], "soup_top1": best, "added": True}]
    for i in order[1:]:
        trial = average_state_dicts([states[j] for j in chosen + [i]])
        value = score(trial)
        added = value >= best   # "does not drop": ties join the soup
        rows.append({"candidate": names[i], "own_top1": own[i], "soup_top1": value, "added": added})
        if added:
            chosen, best = chosen + [i], value
    return average_state_dicts([states[j] for j in chosen]), chosen, rows


@torch.no_grad()
def recompute_bn(model: torch.nn.Module, loader, batches: int) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) over
    ``batches`` batches in training mode. Returns the number of images seen."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None   # None: a cumulative average, so every batch counts equally
    was_training = model.training
    model.train()
    seen = 0
    try:
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            model(x)
            seen += len(x)
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
    return seen


@dataclasses.dataclass
class SoupContext:
    """What scoring and BatchNorm re-estimation need: a model to load weights into and two loaders."""
    model: torch.nn.Module
    val_loader: object
    train_loader: object | None
    num_classes: int
    device: torch.device
    precision: str
    bn_batches: int = 0

    def prepare(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Load ``state``; with bn_batches, re-estimate BatchNorm statistics and return the updated state."""
        self.model.load_state_dict(state)
        if self.bn_batches:
            recompute_bn(self.model, self.train_loader, self.bn_batches)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def score(self, state: dict[str, torch.Tensor]) -> float:
        self.prepare(state)
        meter = evaluate(self.model, self.val_loader, num_classes=self.num_classes, device=self.device,
                         precision=self.precision, show_progress=False)
        return meter.compute()["top1"]


def soup_context(ckpt: dict, *, device: torch.device, bn_batches: int, need_val: bool, data_root: str | None = None,
                 batch: int | None = None, workers: int | None = None) -> SoupContext:
    """Model and loaders from the first checkpoint's recipe (its val split, its training augmentation)."""
    loaded = from_checkpoint("soup", Path("soup"), ckpt)
    # the soup's model stays in the default memory format, so its loaders do too
    loaded = dataclasses.replace(loaded, runtime=dataclasses.replace(loaded.runtime, channels_last=False))
    recipe = parse_recipe(ckpt["recipe"])
    data = data_of(loaded, data_root)
    splits = open_splits(data, None, "soup", recipe.runtime)
    if "train" not in splits:   # a labelled folder to evaluate on: no train/ to hold out from or to refit BN on
        raise CheckpointError(f"soup: {data.root} has no train/ folder; a soup needs the run's data set (train/ "
                              f"and its val split), not a folder to evaluate on")
    if need_val and val_is_test(splits):
        raise CheckpointError("soup: the recipe validates on test (data.holdout_fraction=0); a greedy soup must "
                              "choose on held-out training data, not on the split it reports")
    model = loaded.model.to(device)
    opts = EvalOptions(batch, workers)
    val = eval_loader(splits["val"], data, loaded, loader_settings(loaded, opts, device), device)
    train = None
    if bn_batches:
        settings = LoaderSettings.from_runtime(recipe.runtime, ckpt["plan"]["per_device_batch"], device, train=True)
        settings = settings if workers is None else dataclasses.replace(settings, workers=workers)
        train = make_loader(splits["train"], train=True, data=data, augment=recipe.augment, settings=settings,
                            chans=loaded.in_chans, device=device, seed=recipe.train.seed, channels_last=False)
    return SoupContext(model, val, train, loaded.num_classes, device, loaded.precision, bn_batches)


def soup_checkpoint(base: dict, state: dict[str, torch.Tensor], info: dict) -> dict:
    """A trainkit checkpoint of the soup (evaluate.py reads it like any run's): ``base``'s recipe, classes
    and plan, the soup's weights, no optimizer or EMA state, and ``soup`` recording how it was made."""
    out = {k: v for k, v in base.items() if k not in ("train_step", "rng", "best")}
    return {**out, "model": state, "ema": None, "train_step": None, "metrics": {}, "soup": info}
