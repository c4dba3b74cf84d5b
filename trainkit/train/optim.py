"""Optimizers (through timm's factory) and per-step learning-rate schedules."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from timm.optim import create_optimizer_v2, list_optimizers

from trainkit.config.recipe import OptimCfg, ScheduleCfg
from trainkit.config.registry import OPTIMIZERS, SCHEDULES


def scaled_lr(cfg: OptimCfg, global_batch: int) -> float:
    """Linear scaling rule: ``lr`` is given per ``lr_ref_batch`` images."""
    return cfg.lr * global_batch / cfg.lr_ref_batch


# optim.name -> the name timm's factory knows. Ours: "sgd" honours nesterov (timm's own "sgd" always means
# Nesterov); every other timm optimizer under its own name.
OPTIMIZERS.register("sgd")(lambda cfg: "nesterov" if cfg.nesterov else "momentum")
for _name in list_optimizers():
    if _name not in OPTIMIZERS:
        OPTIMIZERS.register(_name)(lambda cfg, _name=_name: _name)


def build_optimizer(model: torch.nn.Module, cfg: OptimCfg, lr: float, *,
                    param_groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """Create the optimizer for ``model`` at the already scaled ``lr``.

    ``sgd`` honours ``nesterov`` (timm's own "sgd" always means Nesterov). With
    ``no_decay_norm_bias`` every 1-d parameter (norm weights, biases) and the
    model's ``no_weight_decay()`` set get weight decay 0. ``param_groups`` (with their own
    ``weight_decay`` and ``lr_scale``, e.g. from trainkit.train.finetune) replace that grouping.
    """
    name = OPTIMIZERS.get(cfg.name.lower())(cfg)
    kwargs = dict(cfg.kwargs)
    if cfg.betas is not None:
        kwargs["betas"] = tuple(cfg.betas)
    if cfg.eps is not None:
        kwargs["eps"] = cfg.eps
    params = model if param_groups is None else param_groups
    # foreach kernels batch the per-parameter updates (fewer launches, less Python).
    return create_optimizer_v2(params, opt=name, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                               filter_bias_and_bn=cfg.no_decay_norm_bias, foreach=True,
                               **kwargs)


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
