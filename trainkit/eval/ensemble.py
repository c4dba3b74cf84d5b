"""Ensemble evaluation: every member's logits on one split, each member fed its own preprocessing,
and the Markdown table of members and ensemble. The split is decoded once per distinct
preprocessing and every member sharing it reads the same batches. The combine rules and the
ensemble module are in trainkit.models.ensemble, ensemble cards in trainkit.zoo.cards, and
:func:`trainkit.eval.pipeline.evaluate_ensemble` puts them together.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from trainkit.config.schema import to_dict
from trainkit.eval.metrics import ClassificationMeter
from trainkit.models.hub import LoadedModel
from trainkit.runtime.checkpoint import CheckpointError
from trainkit.eval.loop import forward_batches


def member_logits(members: list[LoadedModel], loader_for: Callable[[LoadedModel], object], *, device: torch.device,
                  precision: str, show_progress: bool | str = "auto") -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every member's logits ([N, C] each, on the CPU) and the targets; ``loader_for(member)`` builds the
    eval loader with that member's preprocessing, once per distinct (preprocessing, channels)."""
    groups: dict[str, list[int]] = {}
    for i, m in enumerate(members):
        groups.setdefault(repr((to_dict(m.eval), m.in_chans)), []).append(i)
    outputs: list[list[torch.Tensor]] = [[] for _ in members]
    targets: torch.Tensor | None = None
    for indices in groups.values():
        loader = loader_for(members[indices[0]])
        models = [members[i].model.to(device) for i in indices]
        seen = []
        for (_, y), logits in forward_batches(lambda x: [m(x) for m in models], loader, device=device,  # noqa: B023
                                              precision=precision, models=models, show_progress=show_progress,
                                              desc=f"eval {', '.join(members[i].spec for i in indices)}"):
            for i, x in zip(indices, logits):
                outputs[i].append(x.float().cpu())
            seen.append(y.cpu())
        y_all = torch.cat(seen)
        if targets is not None and not torch.equal(targets, y_all):
            raise CheckpointError("the split read differently for two preprocessings (unreadable images skipped "
                                  "in one but not the other?)")
        targets = y_all
    return [torch.cat(o) for o in outputs], targets


def meter_for(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    meter = ClassificationMeter(num_classes)
    meter.update(logits, targets, F.cross_entropy(logits, targets, reduction="sum"))
    return meter.compute()


def format_table(report: dict) -> str:
    """A Markdown table: one row per member, then the ensemble."""
    lines = ["| model | arch | top-1 % | top-5 % | loss | ECE | samples |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['name']} | {r['arch']} | {r['top1']:.2f} | {r['top5']:.2f} | {r['loss']:.4f} | "
                     f"{r['ece']:.4f} | {r['samples']} |")
    return "\n".join(lines)
