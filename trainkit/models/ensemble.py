"""Ensemble combine rules and an ensemble as one module (a distillation teacher, an ensemble card).

Every rule returns log-probabilities (or, for ``mean_logits``, logits), so top-k, loss and ECE
read them as they read any model's logits.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from trainkit.config.recipe import check_combine_weights
from trainkit.config.registry import COMBINE_RULES

Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (logits [M, N, C], weights [M]) -> [N, C]


@COMBINE_RULES.register("mean_logits")
def mean_logits(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The average of the members' logits (uniform)."""
    return logits.mean(0)


@COMBINE_RULES.register("mean_probs")
def mean_probs(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Log of the average of the members' softmax probabilities (uniform)."""
    return torch.log(logits.softmax(-1).mean(0))


@COMBINE_RULES.register("weighted")
def weighted_probs(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Log of the weighted average of the members' probabilities (weights normalised to sum 1)."""
    w = (weights / weights.sum()).to(logits).view(-1, 1, 1)
    return torch.log((logits.softmax(-1) * w).sum(0))


@COMBINE_RULES.register("vote")
def vote(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Majority vote of the members' top-1; ties go to the higher mean probability.

    Returned as the log of ``(votes + 0.5 * mean_probs) / (M + 0.5)``: a distribution whose
    order is the vote's (half a vote can never overturn a whole one), so its loss and ECE
    describe vote shares, not a calibrated model.
    """
    m, _, c = logits.shape
    votes = F.one_hot(logits.argmax(-1), c).sum(0).to(logits.dtype)
    return torch.log((votes + 0.5 * logits.softmax(-1).mean(0)) / (m + 0.5))


def combine(logits: list[torch.Tensor], rule: str, weights: list[float] | None = None) -> torch.Tensor:
    """Combine per-member ``[N, C]`` outputs with ``rule`` (see :data:`COMBINE`)."""
    fn = COMBINE_RULES.get(rule)
    check_combine_weights(rule, weights, len(logits), "weights")
    stacked = torch.stack([x.float() for x in logits])
    w = torch.tensor(weights if weights is not None else [1.0] * len(logits), dtype=torch.float32)
    return fn(stacked, w)


class Ensemble(torch.nn.Module):
    """Members that each take the same input batch (adapt them first: :func:`trainkit.models.hub.adapted`)."""

    def __init__(self, members: list[torch.nn.Module], rule: str, weights: list[float] | None = None):
        super().__init__()
        COMBINE_RULES.get(rule)
        self.members, self.rule, self.weights = torch.nn.ModuleList(members), rule, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return combine([m(x) for m in self.members], self.rule, self.weights)
