"""Mixup and CutMix on whole batches, with timm's ``Mixup`` semantics.

Applied by the training loader after normalisation (and random erasing), so the
training step sees ``(images, soft_targets)`` and the loss follows by itself:
the losses in :mod:`trainkit.train.losses` accept soft targets and apply label
smoothing to them as ``(1 - s) * y + s / C``.

Differences from timm: the random draws come from the loader's generator (so a
resumed run mixes the same way) and targets are returned unsmoothed (smoothing
belongs to the loss). A mixed image is ``lam * x_i + (1 - lam) * x_j`` with
``j = B - 1 - i`` (the batch reversed), exactly as timm pairs them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from trainkit.config.recipe import MixupCfg

Box = tuple[int, int, int, int]   # (y0, y1, x0, x1), end-exclusive


def cutmix_box(h: int, w: int, lam: float, rng: np.random.Generator,
               minmax: list[float] | None = None) -> Box:
    """timm's ``rand_bbox`` / ``rand_bbox_minmax``: a box of (1 - lam) of the area centred at a
    uniform point and clipped to the image, or (minmax) sides drawn uniformly in [min, max] x side."""
    if minmax is not None:
        ch = int(rng.integers(int(h * minmax[0]), int(h * minmax[1]) + 1))
        cw = int(rng.integers(int(w * minmax[0]), int(w * minmax[1]) + 1))
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return y0, y0 + ch, x0, x0 + cw
    ratio = math.sqrt(1.0 - lam)
    ch, cw = int(h * ratio), int(w * ratio)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    y0, y1 = int(np.clip(cy - ch // 2, 0, h)), int(np.clip(cy + ch // 2, 0, h))
    x0, x1 = int(np.clip(cx - cw // 2, 0, w)), int(np.clip(cx + cw // 2, 0, w))
    return y0, y1, x0, x1


def box_lam(box: Box, h: int, w: int) -> float:
    """The weight of the original image once ``box`` is pasted over it."""
    y0, y1, x0, x1 = box
    return 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)


class Mixup:
    """``(x, y) -> (x_mixed, soft_y)`` for a normalised float batch and class-index targets."""

    def __init__(self, cfg: MixupCfg, num_classes: int):
        self.cfg, self.num_classes = cfg, num_classes
        # timm: cutmix_minmax implies cutmix with a box drawn from the range (alpha unused).
        self.cutmix_alpha = 1.0 if cfg.cutmix_minmax is not None else cfg.cutmix_alpha

    def enabled(self, epoch: int) -> bool:
        return self.cfg.active and (self.cfg.off_epoch is None or epoch < self.cfg.off_epoch)

    def draw(self, rng: np.random.Generator) -> tuple[float, bool]:
        """(lam, use_cutmix) for one batch, pair or element (timm's _params_per_batch)."""
        cfg = self.cfg
        if rng.random() >= cfg.prob:
            return 1.0, False
        if cfg.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.random() < cfg.switch_prob)
            alpha = self.cutmix_alpha if use_cutmix else cfg.mixup_alpha
        elif cfg.mixup_alpha > 0:
            use_cutmix, alpha = False, cfg.mixup_alpha
        else:
            use_cutmix, alpha = True, self.cutmix_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    def box(self, h: int, w: int, lam: float, rng: np.random.Generator) -> tuple[Box, float]:
        """A CutMix box for ``lam`` and the lambda the targets use (the box's true area by default)."""
        box = cutmix_box(h, w, lam, rng, self.cfg.cutmix_minmax)
        exact = self.cfg.correct_lam or self.cfg.cutmix_minmax is not None
        return box, box_lam(box, h, w) if exact else lam

    def lambdas(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Mix ``x`` in place by the configured mode; return the per-element lambda [B]."""
        b, h, w = len(x), x.shape[-2], x.shape[-1]
        if self.cfg.mode == "batch":       # one lambda, image i mixed with image B-1-i
            lam, use_cutmix = self.draw(rng)
            if lam < 1.0 and use_cutmix:
                (y0, y1, x0, x1), lam = self.box(h, w, lam, rng)
                x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
            elif lam < 1.0:
                partner = x.flip(0)   # a copy, taken before x is scaled in place
                x.mul_(lam).add_(partner, alpha=1.0 - lam)
            return torch.full((b,), lam)
        if self.cfg.mode == "pair" and b % 2:
            raise ValueError(f"mixup.mode=pair needs an even batch, got {b}")
        source = x.clone()
        lams = torch.ones(b)
        # elem: every element draws its own lambda; pair: i and B-1-i share one (both are mixed).
        for i in range(b // 2 if self.cfg.mode == "pair" else b):
            j = b - 1 - i
            lam, use_cutmix = self.draw(rng)
            if lam >= 1.0:
                continue
            partners = ((i, j), (j, i)) if self.cfg.mode == "pair" else ((i, j),)
            if use_cutmix:
                (y0, y1, x0, x1), lam = self.box(h, w, lam, rng)
                for dst, src in partners:
                    x[dst, :, y0:y1, x0:x1] = source[src, :, y0:y1, x0:x1]
            else:
                for dst, src in partners:
                    x[dst] = source[dst] * lam + source[src] * (1.0 - lam)
            for dst, _ in partners:
                lams[dst] = lam
        return lams

    def __call__(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator,
                 epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.enabled(epoch):
            return x, y
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (), generator=gen)))
        x = x.clone()
        lam = self.lambdas(x, rng).to(x.device, non_blocking=True)[:, None]
        one_hot = F.one_hot(y, self.num_classes).float()
        return x, lam * one_hot + (1.0 - lam) * one_hot.flip(0)
