"""Training resolution per batch, and multi-scale + flip test-time augmentation.

Each training batch has one resolution, chosen by :class:`Resolution` from the
epoch and the batch's first sample seed. The batch sampler attaches that size to
every ``(index, seed)`` it yields (:class:`SizedBatches`), so on the per-sample
path each DataLoader worker builds its transform at the batch's size: workers and
the batch agree by construction, crops are drawn at the target resolution (no
second resize), and nothing depends on which worker got which batch. The
in-memory path reads the same size and resizes the gathered uint8 batch.
"""

from __future__ import annotations

import functools
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from trainkit.config.recipe import MultiScaleCfg, ProgressiveCfg


def resolution_at(epoch: int, cfg: ProgressiveCfg) -> int:
    """FFCV's ramp: ``start_px`` until ``start_epoch``, linear to ``end_px`` at ``end_epoch``,
    rounded to the nearest multiple of ``step_px``; a pure function of the epoch."""
    if epoch <= cfg.start_epoch:
        return cfg.start_px
    if epoch >= cfg.end_epoch:
        return cfg.end_px
    px = np.interp(epoch, [cfg.start_epoch, cfg.end_epoch], [cfg.start_px, cfg.end_px])
    return int(min(cfg.end_px, max(cfg.start_px, round(px / cfg.step_px) * cfg.step_px)))


class Resolution:
    """Training size of a batch: random from ``sizes`` or the progressive ramp; None: the default."""

    def __init__(self, cfg: MultiScaleCfg, seed: int):
        self.cfg, self.seed = cfg, seed

    @property
    def active(self) -> bool:
        return bool(self.cfg.sizes) or self.cfg.progressive is not None

    def max_px(self, default: int) -> int:
        if self.cfg.sizes:
            return max(self.cfg.sizes)
        return self.cfg.progressive.end_px if self.cfg.progressive else default

    def size(self, epoch: int, first_seed: int) -> int | None:
        if self.cfg.progressive is not None:
            return resolution_at(epoch, self.cfg.progressive)
        if self.cfg.sizes:
            # From the batch's own first sample seed, not a running counter: the same
            # batch gets the same size however many batches were skipped or resumed.
            gen = torch.Generator().manual_seed((first_seed * 31 + self.seed) % (2**63 - 1))
            return self.cfg.sizes[int(torch.randint(len(self.cfg.sizes), (), generator=gen))]
        return None


class SizedBatches:
    """Wraps a batch sampler of ``[(index, seed), ...]``; yields ``[(index, seed, px), ...]``."""

    def __init__(self, batches, resolution: Resolution):
        self.batches, self.resolution = batches, resolution

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for batch in self.batches:
            px = self.resolution.size(self.batches.epoch, batch[0][1]) if batch else None
            yield [(i, s, px) for i, s in batch]

    def __len__(self) -> int:
        return len(self.batches)

    def __getattr__(self, name: str):   # set_epoch, samples, epoch, ... of the wrapped sampler
        return getattr(self.batches, name)


def cached_by_size(build: Callable[[int], Callable]) -> Callable[[int], Callable]:
    """One transform per size, built on first use (in each worker)."""
    return functools.lru_cache(maxsize=None)(build)


def resize_uint8(x: torch.Tensor, px: int) -> torch.Tensor:
    """Resize a uint8 batch [B, C, H, W] to px x px (bilinear, antialiased when shrinking)."""
    if x.shape[-2:] == (px, px):
        return x
    out = F.interpolate(x.float(), size=(px, px), mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


class TTA(torch.nn.Module):
    """Average the softmax over scales (the eval batch resized to each size) and optional flips;
    returns log-probabilities, which serve as logits for top-k and for the loss."""

    def __init__(self, model: torch.nn.Module, sizes: list[int] | None = None, flip: bool = True):
        super().__init__()
        self.model, self.sizes, self.flip = model, list(sizes or []), flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = []
        for px in self.sizes or [None]:
            view = x if px is None or x.shape[-1] == px else \
                F.interpolate(x, size=(px, px), mode="bilinear", align_corners=False, antialias=True)
            for v in (view, view.flip(3)) if self.flip else (view,):
                probs.append(self.model(v).float().softmax(-1))
        return torch.stack(probs).mean(0).clamp_min(1e-12).log()
