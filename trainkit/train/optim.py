"""Optimizers (through timm's factory) and per-step learning-rate schedules."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
from timm.optim import create_optimizer_v2, list_optimizers
from timm.optim._optim_factory import default_registry

from trainkit.config.recipe import OptimCfg, ScheduleCfg
from trainkit.config.registry import OPTIMIZERS, SCHEDULES
from trainkit.config.schema import RecipeError


def scaled_lr(cfg: OptimCfg, global_batch: int) -> float:
    """Linear scaling rule: ``lr`` is given per ``lr_ref_batch`` images."""
    return cfg.lr * global_batch / cfg.lr_ref_batch


# optim.name -> the name timm's factory knows. Ours: "sgd" honours nesterov (timm's own "sgd" always means
# Nesterov); every other timm optimizer under its own name.
OPTIMIZERS.register("sgd")(lambda cfg: "nesterov" if cfg.nesterov else "momentum")
for _name in list_optimizers():
    if _name not in OPTIMIZERS:
        OPTIMIZERS.register(_name)(lambda cfg, _name=_name: _name)


def takes_foreach(timm_name: str) -> bool:
    """Whether timm's optimizer of that name accepts ``foreach`` (torch's do; Muon, Lamb ... do not)."""
    info = default_registry.get_optimizer_info(timm_name)
    opt_class = info.opt_class
    if isinstance(opt_class, str):   # a lazily imported class, named by its path
        return True
    return "foreach" in inspect.signature(opt_class.__init__).parameters


def uses_norm_group(cfg: OptimCfg) -> bool:
    """Whether the optim keys put BatchNorm parameters in a group of their own."""
    return cfg.bn_lr_mult != 1.0 or cfg.bn_weight_decay is not None or cfg.bn_freeze_weight


def norm_param_groups(model: torch.nn.Module, cfg: OptimCfg) -> list[dict]:
    """Groups for ``optim.bn_*``: every BatchNorm parameter at ``lr x bn_lr_mult`` with ``bn_weight_decay``
    (null: as ``no_decay_norm_bias`` says), the rest as timm groups them (1-d and ``no_weight_decay()``
    parameters without decay under ``no_decay_norm_bias``). ``bn_freeze_weight`` turns the BatchNorm
    weights (gamma) off here, for good: they stay 1 and the optimizer never sees them."""
    norm_ids: set[int] = set()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            if cfg.bn_freeze_weight and m.weight is not None:
                m.weight.requires_grad_(False)
            norm_ids.update(id(p) for p in m.parameters(recurse=False))
    skip = set(getattr(model, "no_weight_decay", lambda: ())()) if cfg.no_decay_norm_bias else set()
    norm_wd = cfg.bn_weight_decay if cfg.bn_weight_decay is not None else \
        (0.0 if cfg.no_decay_norm_bias else cfg.weight_decay)
    groups = {"norm": {"params": [], "lr_scale": cfg.bn_lr_mult, "weight_decay": norm_wd},
              "decay": {"params": [], "weight_decay": cfg.weight_decay},
              "no_decay": {"params": [], "weight_decay": 0.0}}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = cfg.no_decay_norm_bias and (p.ndim <= 1 or name.endswith(".bias") or name in skip)
        groups["norm" if id(p) in norm_ids else "no_decay" if no_decay else "decay"]["params"].append(p)
    return [g for g in groups.values() if g["params"]]


def build_optimizer(model: torch.nn.Module, cfg: OptimCfg, lr: float, *,
                    param_groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """Create the optimizer for ``model`` at the already scaled ``lr``.

    ``sgd`` honours ``nesterov`` (timm's own "sgd" always means Nesterov). With
    ``no_decay_norm_bias`` every 1-d parameter (norm weights, biases) and the
    model's ``no_weight_decay()`` set get weight decay 0. ``param_groups`` (with their own
    ``weight_decay`` and ``lr_scale``, e.g. from trainkit.train.finetune) replace that grouping;
    the ``bn_*`` keys (:func:`norm_param_groups`) do the same. ``wd_independent_of_lr`` makes the
    shrink per step ``weight_decay`` per ``lr_ref_batch`` images x the schedule's factor, whatever the lr
    and the group's ``lr_scale`` (airbench's decoupled form, "per 1024 examples").
    """
    name = OPTIMIZERS.get(cfg.name.lower())(cfg)
    kwargs = dict(cfg.kwargs)
    if cfg.betas is not None:
        kwargs["betas"] = tuple(cfg.betas)
    if cfg.eps is not None:
        kwargs["eps"] = cfg.eps
    if uses_norm_group(cfg):
        if param_groups is not None:
            raise RecipeError("optim.bn_lr_mult/bn_weight_decay/bn_freeze_weight: not combined with fine-tuning's "
                              "per-layer groups (finetune.layer_decay, finetune.head_lr_mult)")
        param_groups = norm_param_groups(model, cfg)
    params = model if param_groups is None else param_groups
    # foreach kernels batch the per-parameter updates (fewer launches, less Python).
    if takes_foreach(name):
        kwargs.setdefault("foreach", True)
    optimizer = create_optimizer_v2(params, opt=name, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                                    filter_bias_and_bn=cfg.no_decay_norm_bias, **kwargs)
    if cfg.wd_independent_of_lr:
        # shrink per step = torch's wd x the group's scheduled lr = weight_decay x (global batch / lr_ref_batch)
        # x the schedule's factor: scaled with the batch as the lr is (lr / cfg.lr), whatever lr and lr_scale
        for group in optimizer.param_groups:
            group["weight_decay"] = group["weight_decay"] / (cfg.lr * group.get("lr_scale", 1.0))
    return optimizer


# ---------------------------------------------------------------- schedules

def _cosine(progress: float, cfg: ScheduleCfg) -> float:
    return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_then(decay):
    """A schedule: linear warmup over ``warmup_epochs``, then ``decay(progress, epoch, cfg)`` over the rest."""
    def factor(step: int, steps_per_epoch: int, cfg: ScheduleCfg) -> float:
        total = cfg.epochs * steps_per_epoch
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        if step < warmup:
            return cfg.warmup_start_factor + (1 - cfg.warmup_start_factor) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return decay(progress, step / steps_per_epoch, cfg)
    return factor


# schedule.name -> lr factor as a function of (optimizer step, steps per epoch, cfg)
SCHEDULES.register("cosine")(warmup_then(lambda p, e, cfg: _cosine(p, cfg)))
SCHEDULES.register("linear")(warmup_then(lambda p, e, cfg: cfg.min_lr_factor + (1 - cfg.min_lr_factor) * (1 - p)))
SCHEDULES.register("constant")(warmup_then(lambda p, e, cfg: 1.0))
SCHEDULES.register("step")(warmup_then(lambda p, e, cfg: cfg.gamma ** math.floor(e / cfg.step_epochs)))
SCHEDULES.register("multistep")(warmup_then(lambda p, e, cfg: cfg.gamma ** sum(e >= m for m in cfg.milestones)))


@SCHEDULES.register("onecycle")
def onecycle(step: int, steps_per_epoch: int, cfg: ScheduleCfg) -> float:
    """Rises (cosine) for ``onecycle_pct_start`` of training, then anneals (cosine); no separate warmup."""
    total = cfg.epochs * steps_per_epoch
    rise = max(1, round(cfg.onecycle_pct_start * total))
    if step < rise:
        return cfg.warmup_start_factor + (1 - cfg.warmup_start_factor) * (1 - math.cos(math.pi * step / rise)) / 2
    return _cosine(min(1.0, (step - rise) / max(1, total - rise)), cfg)


@SCHEDULES.register("triangular")
def triangular(step: int, steps_per_epoch: int, cfg: ScheduleCfg) -> float:
    """airbench's schedule: linear from ``warmup_start_factor`` up to 1 at ``onecycle_pct_start`` of the
    run, then linear down to ``min_lr_factor`` at the last step (airbench94: 0.2, 0.23, 0.07)."""
    total = max(1, round(cfg.epochs * steps_per_epoch))
    peak = max(1, int(cfg.onecycle_pct_start * total))
    if step < peak:
        return cfg.warmup_start_factor + (1 - cfg.warmup_start_factor) * step / peak
    return 1 + (cfg.min_lr_factor - 1) * min(1.0, (step - peak) / max(1, total - peak))


@dataclass(frozen=True)
class LrFactor:
    """lr multiplier as a pure function of the optimizer step (picklable, resumable): the named schedule."""
    cfg: ScheduleCfg
    steps_per_epoch: int

    def __call__(self, step: int) -> float:
        return SCHEDULES.get(self.cfg.name)(step, self.steps_per_epoch, self.cfg)


class StepScheduler:
    """Sets every param group's lr to ``base_lr * factor(step)``; state is just the step.

    Each group keeps its own ``base_lr``, so per-group multipliers (head lr,
    layer decay) survive the schedule. ``step()`` follows each optimizer step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, factor: LrFactor):
        self.optimizer, self.factor, self.step_count = optimizer, factor, 0
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self._apply()

    def _apply(self) -> None:
        f = self.factor(self.step_count)
        for group in self.optimizer.param_groups:
            # lr_scale: timm's per-group multiplier (layer-wise decay)
            group["lr"] = group["base_lr"] * group.get("lr_scale", 1.0) * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self._apply()


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleCfg, steps_per_epoch: int) -> StepScheduler:
    return StepScheduler(optimizer, LrFactor(cfg, steps_per_epoch))
