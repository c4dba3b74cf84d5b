"""The one batch loop of evaluation, prediction and feature extraction, and the metric loop on top of it.

Every forward pass that needs no gradient (val during training, evaluate.py, ensembles, soups,
predict, cached features) goes through :func:`forward_batches`: the models in eval mode (restored
after), the forward pass under ``torch.inference_mode()`` (no autograd graph, no version counters)
and the run's autocast. Which weights a run is evaluated with (EMA or raw) is the run's own,
recorded in its plan (``eval_weights``) and read by ``trainkit.models.hub``: no caller decides it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch

from trainkit.eval.metrics import ClassificationMeter
from trainkit.runtime.distributed import all_reduce_sum, autocast
from trainkit.runtime.progress import progress


def first(batch):
    """The input of an ``(x, y)`` batch."""
    return batch[0]


@contextmanager
def eval_mode(models: Iterable[torch.nn.Module]):
    """``models`` in eval mode for the block, each back to its own mode after."""
    models = list(models)
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def forward_batches(forward: Callable, loader: Iterable, *, device: torch.device, precision: str,
                    models: Iterable[torch.nn.Module] = (), prepare: Callable = first,
                    show_progress: bool | str = False, desc: str = "eval", unit: str = "batch",
                    total: int | None = None, count: Callable = lambda batch: 1) -> Iterator[tuple]:
    """For each batch of ``loader``: ``forward(prepare(batch))`` under inference mode and the autocast of
    ``precision``; yields ``(batch, output)`` (output None where ``prepare`` gives None: nothing to run).

    ``models``: put in eval mode for the loop. Inference mode covers the forward pass only, never the caller's
    code between batches (a generator's ``with`` stays entered while it is suspended). The progress bar counts
    ``total`` ``unit`` (default: the loader's batches), ``count(batch)`` per batch."""
    with eval_mode(models):
        bar = progress(total=len(loader) if total is None else total, desc=desc, enabled=show_progress, unit=unit)
        try:
            for batch in loader:
                x = prepare(batch)
                out = None
                if x is not None:
                    with torch.inference_mode(), autocast(device, precision):
                        out = forward(x)
                yield batch, out
                bar.update(count(batch))
        finally:
            bar.close()


def evaluate(model: torch.nn.Module, loader: Iterable, *, num_classes: int, device: torch.device, precision: str,
             loss_fn: Callable | None = None, show_progress: bool = False, desc: str = "eval") -> ClassificationMeter:
    """Top-1/5, loss, confusion and calibration over ``loader``; reduced over ranks (each sample once)."""
    meter = ClassificationMeter(num_classes)
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    for (_, y), logits in forward_batches(model, loader, device=device, precision=precision, models=[model],
                                          show_progress=show_progress, desc=desc):
        logits = logits.float()
        meter.update(logits, y, loss_fn(logits, y) * len(y))
    meter.load_state(all_reduce_sum(meter.state(device)))  # NCCL reduces on the GPU
    return meter


__all__ = ["forward_batches", "evaluate", "eval_mode", "first"]
