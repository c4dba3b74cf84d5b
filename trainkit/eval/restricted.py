"""Evaluating a classifier on a data set whose classes are a subset of the model's.

An ImageNet-1k model on a folder of 10 ImageNet classes (named by synset) is scored two ways
in one pass: the full top-1/top-5 (the argmax over all 1000 outputs must be the right class),
and the top-1 with the logits restricted to the folder's classes (the argmax over those 10
outputs only: the model used as a 10-way classifier without any training). The restricted
logits feed the usual :class:`ClassificationMeter`, so confusion, per-class accuracy and
calibration are those of the 10-way classifier.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from trainkit.data.sources import DataError
from trainkit.eval.metrics import ClassificationMeter
from trainkit.eval.loop import forward_batches


def class_indices(model_classes: Sequence[str], data_classes: Sequence[str], what: str) -> list[int]:
    """The model output index of each data class (by name); a class the model lacks is one-line error."""
    where = {name: i for i, name in enumerate(model_classes)}
    missing = [c for c in data_classes if c not in where]
    if missing:
        raise DataError(f"{what}: the data set's class {missing[0]!r} is not among the model's "
                        f"{len(model_classes)} classes ({len(missing)} of {len(data_classes)} missing; for an "
                        f"ImageNet model, name the class folders by WordNet synset, e.g. n01440764)")
    return [where[c] for c in data_classes]


def evaluate_restricted(model: torch.nn.Module, loader: Iterable, indices: Sequence[int], *, device: torch.device,
                        precision: str, show_progress: bool | str = False, desc: str = "eval") -> dict:
    """Restricted-logit metrics (the meter's, over ``len(indices)`` classes) plus the full-output
    ``top1_all`` / ``top5_all`` (% over every model output) in one pass."""
    idx = torch.as_tensor(list(indices), device=device)
    meter = ClassificationMeter(len(idx))
    hits1 = hits5 = 0
    for (_, y), logits in forward_batches(model, loader, device=device, precision=precision, models=[model],
                                          show_progress=show_progress, desc=desc):
        logits = logits.float()
        sub = logits.index_select(1, idx)
        meter.update(sub, y, torch.nn.functional.cross_entropy(sub, y) * len(y))
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        truth = idx[y].unsqueeze(1)
        hits1 += int((top5[:, :1] == truth).sum())
        hits5 += int((top5 == truth).any(1).sum())
    metrics = meter.compute()
    n = max(metrics["samples"], 1)
    metrics.update(top1_all=100.0 * hits1 / n, top5_all=100.0 * hits5 / n, classes_all=int(logits.shape[1]))
    return metrics
