"""The metric loop: a model over an eval loader, reduced over ranks (each sample counted once)."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from trainkit.eval.metrics import ClassificationMeter
from trainkit.runtime.distributed import all_reduce_sum, autocast
from trainkit.runtime.progress import progress


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable, *, num_classes: int, device: torch.device, precision: str,
             loss_fn: Callable | None = None, show_progress: bool = False, desc: str = "eval") -> ClassificationMeter:
    """Top-1/5, loss, confusion and calibration over ``loader``; reduced over ranks (each sample once)."""
    model.eval()
    meter = ClassificationMeter(num_classes)
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    bar = progress(total=len(loader), desc=desc, enabled=show_progress)
    for x, y in loader:
        with autocast(device, precision):
            logits = model(x)
        meter.update(logits.float(), y, loss_fn(logits.float(), y) * len(y))
        bar.update(1)
    bar.close()
    meter.load_state(all_reduce_sum(meter.state(device)))  # NCCL reduces on the GPU
    return meter
