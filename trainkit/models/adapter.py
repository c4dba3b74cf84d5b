"""Feeding a batch prepared for one model's preprocessing to another model (teachers, ensemble members)."""

from __future__ import annotations

import torch

from trainkit.config.recipe import EvalCfg
from trainkit.runtime.checkpoint import CheckpointError


class InputAdapter(torch.nn.Module):
    """Re-express a batch normalised for one model (``src``) as the input ``model`` expects (``dst``).

    Undo the source normalisation, repeat a grey channel for an RGB model, resize to
    the destination size, normalise with the destination statistics. No crop: the batch
    is already the crop the student sees, and cropping again would hide part of it from
    the teacher. When nothing differs the batch passes through untouched (bit-exact).
    """

    def __init__(self, model: torch.nn.Module, src: EvalCfg, src_chans: int, dst: EvalCfg, dst_chans: int):
        super().__init__()
        if src_chans != dst_chans and not (src_chans == 1 and dst_chans == 3):
            raise CheckpointError(f"cannot feed {src_chans}-channel images to a model that expects {dst_chans}")
        self.model, self.size, self.mode = model, dst.size, dst.interpolation
        self.repeat = dst_chans if src_chans != dst_chans else 1
        self.same_stats = (list(src.mean), list(src.std)) == (list(dst.mean), list(dst.std)) and self.repeat == 1

        def stats(values: list[float], chans: int) -> torch.Tensor:
            return torch.tensor(values * (chans // len(values)), dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("src_mean", stats(src.mean, src_chans), persistent=False)
        self.register_buffer("src_std", stats(src.std, src_chans), persistent=False)
        self.register_buffer("dst_mean", stats(dst.mean, dst_chans), persistent=False)
        self.register_buffer("dst_std", stats(dst.std, dst_chans), persistent=False)

    def convert(self, x: torch.Tensor) -> torch.Tensor:
        same_size = x.shape[-2:] == (self.size, self.size)
        if self.same_stats and same_size:
            return x
        x = x.float() * self.src_std + self.src_mean            # back to [0, 1] pixels
        if self.repeat > 1:
            x = x.repeat(1, self.repeat, 1, 1)
        if not same_size:
            smooth = self.mode != "nearest"
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode=self.mode,
                                                align_corners=False if smooth else None, antialias=smooth)
        return (x - self.dst_mean) / self.dst_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.convert(x))
