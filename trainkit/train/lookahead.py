"""``optim.lookahead``: slow weights that the fast (optimizer's) weights are pulled back to every k steps.

airbench's form (``LookaheadState`` in its utils.py): the slow copy covers the whole floating-point
state dict (BatchNorm running statistics too), alpha may ramp down over the run, and the run ends on
the slow weights. It runs as a step hook (``TrainStep.after_step``), so the training step itself
does not change; its state (the slow copy) is saved in every checkpoint for an exact resume.
"""

from __future__ import annotations

import torch

from trainkit.config.recipe import LookaheadCfg


class Lookahead:
    """Every ``cfg.k`` optimizer steps: ``slow += alpha_t (fast - slow)``, then ``fast = slow``; at the last
    step (``total_steps``) the fast weights become the slow ones whatever the phase."""

    def __init__(self, model: torch.nn.Module, cfg: LookaheadCfg, total_steps: int):
        self.model, self.cfg, self.total_steps = model, cfg, total_steps
        self.slow = {k: v.detach().clone() for k, v in self._float_state().items()}

    def _float_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}

    def alpha(self, step: int) -> float:
        """The slow weights' step at optimizer step ``step``: ``alpha``, or ramped from 1 down to it."""
        if self.cfg.alpha_ramp_power == 0:
            return self.cfg.alpha
        progress = min(1.0, step / max(1, self.total_steps))
        return 1.0 - (1.0 - self.cfg.alpha) * progress ** self.cfg.alpha_ramp_power

    @torch.no_grad()
    def __call__(self, step: int) -> None:
        """The step hook: ``step`` is the count of optimizer steps done."""
        if step % self.cfg.k == 0:
            alpha = self.alpha(step)
            for name, fast in self._float_state().items():
                slow = self.slow[name]
                slow.lerp_(fast.to(slow.dtype), alpha)
                fast.copy_(slow)
        if step == self.total_steps:
            for name, fast in self._float_state().items():
                fast.copy_(self.slow[name])

    def state_dict(self) -> dict:
        return {"slow": {k: v.clone() for k, v in self.slow.items()}}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state["slow"].items():
            self.slow[name].copy_(value)
