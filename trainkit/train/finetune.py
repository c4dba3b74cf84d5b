"""Fine-tuning a pretrained model: new head, frozen parts (per epoch), frozen BatchNorm
statistics, and per-layer learning rates (layer-wise decay, head multiplier).

Layers and stages come from the model's timm ``group_matcher`` (fine: one layer per
block; coarse: one group per stage, the stem first), so the same keys work for any
timm model that has one and for trainkit's CIFAR ResNets.

Frozen parameters stay in the optimizer with ``requires_grad=False``: they get no
gradient, so SGD/AdamW skip them (no update, no weight decay, no momentum), and
unfreezing later needs no new optimizer. A frozen layer is frozen entirely: its
BatchNorm layers also keep their running statistics.
"""

from __future__ import annotations

import logging

from torch import nn
from timm.models import group_parameters

from trainkit.config.schema import RecipeError
from trainkit.config.recipe import FinetuneCfg, OptimCfg
from trainkit.models.weights import head_param_names

log = logging.getLogger("trainkit")


def layer_ids(model: nn.Module, coarse: bool = False) -> tuple[dict[str, int], int]:
    """Parameter name -> layer id from the model's ``group_matcher``; the head is layer ``L`` (returned)."""
    matcher = getattr(model, "group_matcher", None)
    if matcher is None:
        raise RecipeError(f"finetune: {type(model).__name__} has no group_matcher, so it has no layers or stages; "
                          f"use finetune.freeze=backbone and no layer_decay")
    ids = group_parameters(model, matcher(coarse=coarse), reverse=True)
    head = head_param_names(model)
    body = [i for n, i in ids.items() if n not in head]
    top = max(body, default=-1) + 1
    return {n: top if n in head else i for n, i in ids.items()}, top


def frozen_names(model: nn.Module, cfg: FinetuneCfg) -> set[str]:
    """The parameters that ``cfg`` freezes (while frozen at all)."""
    head = head_param_names(model)
    if cfg.linear_probe or cfg.freeze == "backbone":
        return {n for n, _ in model.named_parameters() if n not in head}
    if cfg.freeze == "stages":
        ids, top = layer_ids(model, coarse=True)
        if cfg.freeze_stages >= top:  # group 0 is the stem, so stages are 1..top-1
            raise RecipeError(f"finetune.freeze_stages: {type(model).__name__} has {top - 1} stages after its "
                              f"stem, got {cfg.freeze_stages} (use freeze=backbone to freeze them all)")
        return {n for n, i in ids.items() if i <= cfg.freeze_stages and n not in head}
    return set()


def lr_scales(model: nn.Module, cfg: FinetuneCfg) -> dict[str, float]:
    """Per-parameter lr multiplier: ``layer_decay ** (L - layer)``, times ``head_lr_mult`` on the head."""
    head = head_param_names(model)
    if cfg.layer_decay is None:
        return {n: cfg.head_lr_mult if n in head else 1.0 for n, _ in model.named_parameters()}
    ids, top = layer_ids(model)
    return {n: cfg.layer_decay ** (top - ids[n]) * (cfg.head_lr_mult if n in head else 1.0)
            for n, _ in model.named_parameters()}


def param_groups(model: nn.Module, cfg: FinetuneCfg, optim: OptimCfg) -> list[dict] | None:
    """Optimizer groups carrying ``lr_scale`` (read by the scheduler) and their weight decay;
    None when every parameter learns at the base lr (the optimizer then groups as usual)."""
    if cfg.layer_decay is None and cfg.head_lr_mult == 1.0:
        return None
    scales = lr_scales(model, cfg)
    skip = set(getattr(model, "no_weight_decay", lambda: ())()) if optim.no_decay_norm_bias else set()
    groups: dict[tuple[float, float], dict] = {}
    for name, p in model.named_parameters():
        # as timm's filter_bias_and_bn: norm weights and biases (1-d) get no weight decay
        no_decay = optim.no_decay_norm_bias and (p.ndim <= 1 or name.endswith(".bias") or name in skip)
        wd = 0.0 if no_decay else optim.weight_decay
        group = groups.setdefault((scales[name], wd), {"params": [], "lr_scale": scales[name], "weight_decay": wd,
                                                        "names": []})
        group["params"].append(p)
        group["names"].append(name)
    return list(groups.values())


class Finetuner:
    """Applies a :class:`FinetuneCfg` to a built (and placed) model; ``set_epoch`` before each epoch."""

    def __init__(self, model: nn.Module, cfg: FinetuneCfg, num_classes: int):
        self.model, self.cfg = model, cfg
        if cfg.reset_head:
            self._reset_head(num_classes)
        # parameters the model itself keeps frozen (e.g. speednet's whitening stem) are never unfrozen here
        self.frozen = frozen_names(model, cfg) & {n for n, p in model.named_parameters() if p.requires_grad}
        self.frozen_now = False
        frozen_params = {id(p) for n, p in model.named_parameters() if n in self.frozen}
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                in_frozen = bool(module.weight is not None and id(module.weight) in frozen_params)
                module.register_forward_pre_hook(self._bn_hook(in_frozen))
        if self.frozen or cfg.freeze_bn_stats:
            log.info("finetune: %d of %d parameter tensors frozen%s%s", len(self.frozen),
                     len(list(model.parameters())),
                     "" if cfg.unfreeze_after_epochs is None else f" until epoch {cfg.unfreeze_after_epochs}",
                     "; BatchNorm statistics frozen" if cfg.freeze_bn_stats or cfg.linear_probe else "")

    def _reset_head(self, num_classes: int) -> None:
        ref = next(self.model.parameters())
        self.model.reset_classifier(num_classes)
        self.model.get_classifier().to(ref.device)   # reset_classifier builds on the CPU
        log.info("finetune: new classifier with %d classes", num_classes)

    def _bn_hook(self, in_frozen: bool):
        stats_frozen = self.cfg.freeze_bn_stats or self.cfg.linear_probe

        def hook(module: nn.Module, args) -> None:
            # train() is called once per epoch on the whole model; this runs before every forward,
            # so a frozen BatchNorm normalises with its running statistics and never updates them
            if module.training and (stats_frozen or (in_frozen and self.frozen_now)):
                module.train(False)
        return hook

    def frozen_at(self, epoch: int) -> bool:
        """Whether the frozen parts are frozen during ``epoch`` (0-based): a pure function, so resume agrees."""
        after = self.cfg.unfreeze_after_epochs
        return bool(self.frozen) and (after is None or epoch < after)

    def set_epoch(self, epoch: int) -> None:
        frozen = self.frozen_at(epoch)
        if frozen != self.frozen_now and epoch > 0:
            log.info("finetune: epoch %d: %s", epoch + 1, "frozen parts stay frozen" if frozen else "unfrozen")
        self.frozen_now = frozen
        for name, p in self.model.named_parameters():
            if name in self.frozen:
                p.requires_grad_(not frozen)

    def param_groups(self, optim: OptimCfg) -> list[dict] | None:
        return param_groups(self.model, self.cfg, optim)

