"""``data.eval.tta``: multi-view test-time augmentation as a model wrapper (airbench's ``infer``).

The wrapper is an ``nn.Module`` whose forward averages the wrapped model's logits over the views,
so the one evaluation loop (trainkit.eval.loop) runs it like any model: no second loop.

* ``flip``: the image and its mirror, logits averaged (airbench tta_level 1);
* ``flip+translate``: half the weight on that pair, the other half on the pairs of the image shifted
  by one pixel up-left and down-right (reflect-padded): six views (airbench tta_level 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mirror_mean(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits averaged over ``x`` and its horizontal mirror."""
    return 0.5 * model(x).float() + 0.5 * model(x.flip(-1)).float()


def shifted_views(x: torch.Tensor, px: int = 1) -> list[torch.Tensor]:
    """``x`` moved ``px`` pixels towards the bottom-right and towards the top-left (reflect padding)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (px,) * 4, mode="reflect")
    return [padded[..., :h, :w], padded[..., 2 * px:2 * px + h, 2 * px:2 * px + w]]


class FlipTranslateTTA(torch.nn.Module):
    """Averages ``model``'s logits over the views of ``mode`` (flip, flip+translate)."""

    def __init__(self, model: torch.nn.Module, mode: str = "flip+translate"):
        super().__init__()
        if mode not in TTA_VIEWS:
            raise ValueError(f"data.eval.tta: unknown mode {mode!r}; choose one of {', '.join(TTA_VIEWS)}")
        self.model, self.mode = model, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = mirror_mean(self.model, x)
        if self.mode == "flip":
            return logits
        shifted = torch.stack([mirror_mean(self.model, v) for v in shifted_views(x)]).mean(0)
        return 0.5 * logits + 0.5 * shifted


# data.eval.tta -> the number of views each image is evaluated at (none: the model alone)
TTA_VIEWS = {"flip": 2, "flip+translate": 6}


def with_tta(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """``model`` wrapped for ``data.eval.tta`` (``none``: unchanged)."""
    return model if mode == "none" else FlipTranslateTTA(model, mode)
