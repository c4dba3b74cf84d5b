"""Training losses, by name. Each takes logits and either class indices or soft targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainkit.config.recipe import LossCfg
from trainkit.config.registry import Registry

LOSSES: Registry = Registry("loss", key="loss.name")


def smooth_targets(targets: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Class indices or soft targets -> soft targets with label smoothing (same rule as
    ``F.cross_entropy(label_smoothing=...)``: ``(1 - s) * y + s / C``)."""
    if targets.dtype in (torch.int64, torch.int32):
        targets = F.one_hot(targets, num_classes).float()
    return targets * (1.0 - smoothing) + smoothing / num_classes


class CrossEntropy(torch.nn.Module):
    """Cross-entropy for hard or soft targets, with label smoothing."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # the loss is computed in fp32 even under autocast
        if targets.dtype in (torch.int64, torch.int32):
            return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        soft = smooth_targets(targets, logits.shape[-1], self.label_smoothing)
        return torch.sum(-soft * F.log_softmax(logits, dim=-1), dim=-1).mean()


class BinaryCrossEntropy(torch.nn.Module):
    """Per-class sigmoid BCE on (smoothed) one-hot targets, as in "ResNet strikes back"."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        soft = smooth_targets(targets, logits.shape[-1], self.label_smoothing)
        return F.binary_cross_entropy_with_logits(logits, soft)  # mean over elements, as timm


LOSSES.register("ce")(CrossEntropy)
LOSSES.register("bce")(BinaryCrossEntropy)


def build_loss(cfg: LossCfg) -> torch.nn.Module:
    return LOSSES.get(cfg.name)(label_smoothing=cfg.label_smoothing)
