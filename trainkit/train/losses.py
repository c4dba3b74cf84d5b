"""Training losses, by name. Each takes logits and either class indices or soft targets.

The imbalance losses read the training split's class counts ``n_c``:

* ``class_weights`` (ce, focal, balanced_softmax, ldam): a per-class weight ``w_c``, scaled to mean 1, and
  the weighted mean ``sum_i sum_c w_c q_ic l_ic / sum_i sum_c w_c t_ic`` (``t``: the target before
  smoothing, ``q``: after). With class indices this is exactly ``F.cross_entropy(weight=w,
  label_smoothing=s)``'s reduction; with soft (mixup) targets a sample weighs the mix of its classes'
  weights. ``reweight_from_epoch`` defers the weights (DRW).
* ``focal``: ``-(1 - p_c) ** gamma * log p_c`` per target class; with smoothed or mixed targets each
  class's term carries its own factor (gamma 0 is cross-entropy).
* ``balanced_softmax``: cross-entropy of ``logits + tau * log(n_c / N)``; evaluation uses the plain
  logits, so the prior learned from the training counts is removed from the predictions.
* ``ldam``: cross-entropy of ``s * (logits - m_y one_hot(y))`` with ``m_c`` proportional to ``n_c ** -1/4``;
  needs class indices (mixup is refused in the recipe), label smoothing applies after the margin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainkit.config.recipe import LossCfg
from trainkit.config.registry import LOSSES
from trainkit.config.schema import RecipeError


def is_hard(targets: torch.Tensor) -> bool:
    return targets.dtype in (torch.int64, torch.int32)


def smooth_targets(targets: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """Class indices or soft targets -> soft targets with label smoothing (same rule as
    ``F.cross_entropy(label_smoothing=...)``: ``(1 - s) * y + s / C``)."""
    if is_hard(targets):
        targets = F.one_hot(targets, num_classes).float()
    return targets * (1.0 - smoothing) + smoothing / num_classes


def class_weights(counts: torch.Tensor, kind: str, beta: float = 0.9999) -> torch.Tensor | None:
    """Per-class loss weights from training counts, scaled so they average 1 (Cao et al.'s code: sum to C)."""
    n = counts.double()
    if kind == "none":
        return None
    if kind == "inverse":
        w = 1.0 / n
    elif kind == "inverse_sqrt":
        w = n.rsqrt()
    elif kind == "effective_number":
        w = (1.0 - beta) / (1.0 - beta ** n)    # 1 / effective number of samples (Cui et al. 2019)
    else:
        raise ValueError(f"unknown class weighting {kind!r}")
    return (w * len(w) / w.sum()).float()


def weighted_soft_ce(logits: torch.Tensor, targets: torch.Tensor, smoothing: float,
                     weight: torch.Tensor | None = None, gamma: float = 0.0) -> torch.Tensor:
    """``sum_i sum_c w_c q_ic (1 - p_ic) ** gamma (-log p_ic) / sum_i sum_c w_c t_ic`` (see the module doc)."""
    t = F.one_hot(targets, logits.shape[-1]).float() if is_hard(targets) else targets.float()
    q = smooth_targets(t, logits.shape[-1], smoothing)
    logp = F.log_softmax(logits, dim=-1)
    term = -q * logp
    if gamma:
        term = term * (1.0 - logp.exp()).clamp(min=0).pow(gamma)
    if weight is None:
        return term.sum(-1).mean()
    return (term * weight).sum() / (t * weight).sum()


class ClassCountLoss(torch.nn.Module):
    """A loss that may read the training class counts; ``set_epoch`` switches deferred re-weighting on."""

    def __init__(self, label_smoothing: float = 0.0, weight: torch.Tensor | None = None,
                 reweight_from_epoch: int | None = None):
        super().__init__()
        self.label_smoothing, self.reweight_from_epoch = label_smoothing, reweight_from_epoch
        self.register_buffer("class_weight", weight)
        self.weighted = weight is not None and reweight_from_epoch is None

    def set_epoch(self, epoch: int) -> None:
        if self.class_weight is not None and self.reweight_from_epoch is not None:
            self.weighted = epoch >= self.reweight_from_epoch

    @property
    def weight(self) -> torch.Tensor | None:
        return self.class_weight if self.weighted else None


class CrossEntropy(ClassCountLoss):
    """Cross-entropy for hard or soft targets, with label smoothing and optional class weights."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # the loss is computed in fp32 even under autocast
        if is_hard(targets):
            return F.cross_entropy(logits, targets, weight=self.weight, label_smoothing=self.label_smoothing)
        return weighted_soft_ce(logits, targets, self.label_smoothing, self.weight)


class FocalLoss(ClassCountLoss):
    """Multi-class focal loss (Lin et al. 2017); ``class_weights`` play the role of its alpha."""

    def __init__(self, gamma: float = 2.0, **kw):
        super().__init__(**kw)
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return weighted_soft_ce(logits.float(), targets, self.label_smoothing, self.weight, self.gamma)


class BalancedSoftmax(ClassCountLoss):
    """Logit-adjusted cross-entropy (Menon et al. 2021): train on ``logits + tau * log prior``; tau=1 is
    balanced softmax (Ren et al. 2020), ``p_y = n_y e^{z_y} / sum_c n_c e^{z_c}``."""

    def __init__(self, counts: torch.Tensor, tau: float = 1.0, **kw):
        super().__init__(**kw)
        self.register_buffer("log_prior", (counts.double() / counts.sum()).log().float())
        self.tau = tau

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float() + self.tau * self.log_prior
        if is_hard(targets):
            return F.cross_entropy(logits, targets, weight=self.weight, label_smoothing=self.label_smoothing)
        return weighted_soft_ce(logits, targets, self.label_smoothing, self.weight)


class LDAMLoss(ClassCountLoss):
    """Label-distribution-aware margin loss (Cao et al. 2019), as their reference code: the true class's
    logit minus ``m_y = max_margin * (n_y / n_min) ** -1/4``, everything times ``scale``."""

    def __init__(self, counts: torch.Tensor, max_margin: float = 0.5, scale: float = 30.0, **kw):
        super().__init__(**kw)
        m = counts.double() ** -0.25
        self.register_buffer("margins", (m * (max_margin / m.max())).float())
        self.scale = scale

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not is_hard(targets):
            raise ValueError("loss.name=ldam needs class indices; mixed (soft) targets have no single true class")
        logits = logits.float()
        adjusted = logits - F.one_hot(targets, logits.shape[-1]) * self.margins[targets][:, None]
        return F.cross_entropy(self.scale * adjusted, targets, weight=self.weight,
                               label_smoothing=self.label_smoothing)


class BinaryCrossEntropy(torch.nn.Module):
    """Per-class sigmoid BCE on (smoothed) one-hot targets, as in "ResNet strikes back"."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        soft = smooth_targets(targets, logits.shape[-1], self.label_smoothing)
        return F.binary_cross_entropy_with_logits(logits, soft)  # mean over elements, as timm


# name -> builder(cfg, common keyword arguments of ClassCountLoss, training class counts)
LOSSES.register("ce")(lambda cfg, kw, counts: CrossEntropy(**kw))
LOSSES.register("bce")(lambda cfg, kw, counts: BinaryCrossEntropy(cfg.label_smoothing))
LOSSES.register("focal")(lambda cfg, kw, counts: FocalLoss(cfg.focal_gamma, **kw))
LOSSES.register("balanced_softmax")(lambda cfg, kw, counts: BalancedSoftmax(counts, cfg.tau, **kw))
LOSSES.register("ldam")(lambda cfg, kw, counts: LDAMLoss(counts, cfg.ldam_max_margin, cfg.ldam_scale, **kw))
NEEDS_COUNTS = ("balanced_softmax", "ldam")


def build_loss(cfg: LossCfg, class_counts: torch.Tensor | None = None) -> torch.nn.Module:
    """The loss ``cfg`` names; ``class_counts`` (training images per class) feed the imbalance keys."""
    uses_counts = cfg.name in NEEDS_COUNTS or cfg.class_weights != "none"
    if uses_counts:
        if class_counts is None:
            raise ValueError(f"loss.name={cfg.name} with class_weights={cfg.class_weights} needs the class counts")
        empty = (class_counts == 0).nonzero().flatten().tolist()
        if empty:
            raise RecipeError(f"loss.name={cfg.name}, class_weights={cfg.class_weights}: class index {empty[0]} "
                              f"has no training images, so its weight, prior or margin is undefined")
    weight = class_weights(class_counts, cfg.class_weights, cfg.effective_beta) if uses_counts else None
    kw = dict(label_smoothing=cfg.label_smoothing, weight=weight, reweight_from_epoch=cfg.reweight_from_epoch)
    return LOSSES.get(cfg.name)(cfg, kw, class_counts)
