"""Exponential moving average of a model's weights (and buffers), as a step hook.

``ema = decay_n * ema + (1 - decay_n) * weights`` every ``every_steps`` optimizer
steps, where ``decay_n`` is ``decay`` or, with ``warmup``, timm ModelEmaV3's ramp
``min(decay, 1 - (1 + n / gamma) ** -power)`` over the update count ``n`` (so the
first update copies the weights and early averages are not dominated by the
random initialisation). Integer buffers (BatchNorm's ``num_batches_tracked``) are
copied. The state (weights and update count) goes into every checkpoint.
"""

from __future__ import annotations

import copy

import torch

from trainkit.config.recipe import EmaCfg


class ModelEma:
    def __init__(self, model: torch.nn.Module, cfg: EmaCfg):
        if cfg.decay is None:
            raise ValueError("ModelEma needs ema.decay")
        self.cfg, self.updates = cfg, 0
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, n: int) -> float:
        """The decay of update number ``n`` (0-based)."""
        cfg = self.cfg
        if not cfg.warmup:
            return cfg.decay
        return min(cfg.decay, max(0.0, 1.0 - (1.0 + n / cfg.warmup_gamma) ** -cfg.warmup_power))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = self.decay_at(self.updates)
        ema_state, model_state = self.module.state_dict(), model.state_dict()
        floats = [name for name, value in ema_state.items() if value.is_floating_point()]
        # One fused lerp over all float tensors (a few kernel launches instead of one per tensor):
        # decay * ema + (1 - decay) * value.
        torch._foreach_lerp_([ema_state[n] for n in floats],
                             [model_state[n].detach().to(ema_state[n].dtype) for n in floats], 1.0 - decay)
        for name, value in ema_state.items():
            if not value.is_floating_point():
                value.copy_(model_state[name])
        self.updates += 1

    def hook(self, model: torch.nn.Module):
        """A TrainStep ``after_step`` hook that updates from ``model`` every ``every_steps`` steps."""
        def after_step(optimizer_steps: int) -> None:
            if optimizer_steps % self.cfg.every_steps == 0:
                self.update(model)
        return after_step

    def state_dict(self) -> dict:
        return {"model": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.updates = int(state["updates"])
