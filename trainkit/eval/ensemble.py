"""Ensembles: combine rules, an ensemble as a module (a distillation teacher), evaluation of
members and their ensemble in one table, and ensemble cards (``zoo/ensembles/<id>.yaml``).

Members may differ in architecture and in eval preprocessing. For evaluation each member
gets its own preprocessing of the same images: the split is loaded once per distinct
preprocessing and every member sharing it reads the same batches. Every rule returns
log-probabilities (or, for ``mean_logits``, logits), so top-k, loss and ECE read them as
they read any model's logits.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F
import yaml

from trainkit.runtime.checkpoint import CheckpointError
from trainkit.config.schema import RecipeError, to_dict
from trainkit.config.registry import Registry
from trainkit.models.hub import LoadedModel, adapted

Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (logits [M, N, C], weights [M]) -> [N, C]
COMBINE: Registry[Combine] = Registry("ensemble combine rule", key="combine")


@COMBINE.register("mean_logits")
def mean_logits(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The average of the members' logits (uniform)."""
    return logits.mean(0)


@COMBINE.register("mean_probs")
def mean_probs(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Log of the average of the members' softmax probabilities (uniform)."""
    return torch.log(logits.softmax(-1).mean(0))


@COMBINE.register("weighted")
def weighted_probs(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Log of the weighted average of the members' probabilities (weights normalised to sum 1)."""
    w = (weights / weights.sum()).to(logits).view(-1, 1, 1)
    return torch.log((logits.softmax(-1) * w).sum(0))


@COMBINE.register("vote")
def vote(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Majority vote of the members' top-1; ties go to the higher mean probability.

    Returned as the log of ``(votes + 0.5 * mean_probs) / (M + 0.5)``: a distribution whose
    order is the vote's (half a vote can never overturn a whole one), so its loss and ECE
    describe vote shares, not a calibrated model.
    """
    m, _, c = logits.shape
    votes = F.one_hot(logits.argmax(-1), c).sum(0).to(logits.dtype)
    return torch.log((votes + 0.5 * logits.softmax(-1).mean(0)) / (m + 0.5))


def combine(logits: list[torch.Tensor], rule: str, weights: list[float] | None = None) -> torch.Tensor:
    """Combine per-member ``[N, C]`` outputs with ``rule`` (see :data:`COMBINE`)."""
    fn = COMBINE.get(rule)
    if (rule == "weighted") != (weights is not None):
        raise RecipeError(f"combine={rule}: weights are given exactly for the 'weighted' rule")
    if weights is not None and (len(weights) != len(logits) or min(weights) < 0 or sum(weights) <= 0):
        raise RecipeError(f"weights: one non-negative weight per member ({len(logits)}), got {weights}")
    stacked = torch.stack([x.float() for x in logits])
    w = torch.tensor(weights if weights is not None else [1.0] * len(logits), dtype=torch.float32)
    return fn(stacked, w)


class Ensemble(torch.nn.Module):
    """Members that each take the same input batch (adapt them first: :func:`trainkit.models.hub.adapted`)."""

    def __init__(self, members: list[torch.nn.Module], rule: str, weights: list[float] | None = None):
        super().__init__()
        COMBINE.get(rule)
        self.members, self.rule, self.weights = torch.nn.ModuleList(members), rule, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return combine([m(x) for m in self.members], self.rule, self.weights)


def check_same_classes(members: list[LoadedModel]) -> list[str] | None:
    """The members' common class list (None if no member names its classes); one-line error otherwise."""
    first = members[0]
    for m in members[1:]:
        if m.num_classes != first.num_classes:
            raise CheckpointError(f"ensemble members predict different class counts: {first.spec} has "
                                  f"{first.num_classes}, {m.spec} has {m.num_classes}")
    named = [m for m in members if m.classes is not None]
    for m in named[1:]:
        if m.classes != named[0].classes:
            diff = next(i for i, (a, b) in enumerate(zip(m.classes, named[0].classes)) if a != b)
            raise CheckpointError(f"ensemble members' classes differ: class {diff} is {named[0].classes[diff]!r} "
                                  f"in {named[0].spec} but {m.classes[diff]!r} in {m.spec}")
    return named[0].classes if named else None


def loaded_ensemble(spec: str, members: list[LoadedModel], rule: str,
                    weights: list[float] | None) -> LoadedModel:
    """An ensemble as one model whose input is the first member's preprocessing."""
    classes = check_same_classes(members)
    first = members[0]
    module = Ensemble([adapted(m, first.eval, first.in_chans) for m in members], rule, weights).eval()
    return LoadedModel(spec, f"ensemble({','.join(m.arch for m in members)})", module, first.eval,
                       first.num_classes, first.in_chans, classes, first.data)


# ---------------------------------------------------------------- evaluation

@torch.no_grad()
def member_logits(members: list[LoadedModel], split, data_cfg, *, batch: int, workers: int, device: torch.device,
                  precision: str, show_progress: bool | str = "auto") -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every member's logits on ``split`` ([N, C] each, on the CPU) and the targets.

    The split is decoded once per distinct (preprocessing, channels); members sharing it read the same batches.
    """
    from trainkit.data.loaders import LoaderSettings, make_loader
    from trainkit.train.engine import autocast
    from trainkit.runtime.progress import progress
    from trainkit.config.recipe import AugmentCfg

    groups: dict[str, list[int]] = {}
    for i, m in enumerate(members):
        groups.setdefault(repr((to_dict(m.eval), m.in_chans)), []).append(i)
    outputs: list[list[torch.Tensor]] = [[] for _ in members]
    targets: torch.Tensor | None = None
    for indices in groups.values():
        first = members[indices[0]]
        data = dataclasses.replace(data_cfg, eval=first.eval)
        loader = make_loader(split, train=False, data=data, augment=AugmentCfg(),
                             settings=LoaderSettings(batch, workers, False, 2, False, False), chans=first.in_chans,
                             device=device, seed=0, channels_last=False)
        for i in indices:
            members[i].model.to(device).eval()
        seen = []
        bar = progress(total=len(loader), desc=f"eval {', '.join(members[i].spec for i in indices)}",
                       enabled=show_progress)
        for x, y in loader:
            with autocast(device, precision):
                for i in indices:
                    outputs[i].append(members[i].model(x).float().cpu())
            seen.append(y.cpu())
            bar.update(1)
        bar.close()
        y_all = torch.cat(seen)
        if targets is not None and not torch.equal(targets, y_all):
            raise CheckpointError("the split read differently for two preprocessings (unreadable images skipped "
                                  "in one but not the other?)")
        targets = y_all
    return [torch.cat(o) for o in outputs], targets


def meter_for(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    from trainkit.eval.metrics import ClassificationMeter

    meter = ClassificationMeter(num_classes)
    meter.update(logits, targets, F.cross_entropy(logits, targets, reduction="sum"))
    return meter.compute()


def evaluate_ensemble(members: list[LoadedModel], rule: str, weights: list[float] | None, *, split: str = "test",
                      data_cfg=None, batch: int = 500, workers: int = 2, device: torch.device = torch.device("cpu"),
                      precision: str = "fp32", show_progress: bool | str = "auto") -> dict:
    """Per-member and ensemble metrics on one split: ``{"rows": [...], "classes": ..., ...}``.

    ``data_cfg`` defaults to the first member that knows its data set.
    """
    from trainkit.data.sources import DataError, open_source, resolve_splits

    if not members:
        raise RecipeError("an ensemble needs at least one member")
    classes = check_same_classes(members)
    COMBINE.get(rule)
    data_cfg = data_cfg or next((m.data for m in members if m.data is not None), None)
    if data_cfg is None:
        raise RecipeError("no member names its data set; give --data-root (an ImageFolder)")
    splits = resolve_splits(data_cfg, open_source(data_cfg))
    found = list(splits["train"].classes)
    if classes is not None and found != classes:
        raise DataError(f"the data's classes differ from the members' ({len(found)} vs {len(classes)} classes; "
                        f"is {data_cfg.root} the right data root?)")
    logits, targets = member_logits(members, splits[split], data_cfg, batch=batch, workers=workers, device=device,
                                    precision=precision, show_progress=show_progress)
    n = members[0].num_classes
    rows = [{"name": m.spec, "arch": m.arch, "preprocessing": m.describe_preprocessing(), **meter_for(x, targets, n)}
            for m, x in zip(members, logits)]
    label = f"ensemble ({rule}{', weights ' + ','.join(f'{w:g}' for w in weights) if weights else ''})"
    rows.append({"name": label, "arch": "-", "preprocessing": "each member its own",
                 **meter_for(combine(logits, rule, weights), targets, n)})
    return {"split": split, "rule": rule, "weights": weights, "classes": found, "data_root": data_cfg.root,
            "precision": precision, "rows": rows}


def format_table(report: dict) -> str:
    """A Markdown table: one row per member, then the ensemble."""
    lines = ["| model | arch | top-1 % | top-5 % | loss | ECE | samples |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['name']} | {r['arch']} | {r['top1']:.2f} | {r['top5']:.2f} | {r['loss']:.4f} | "
                     f"{r['ece']:.4f} | {r['samples']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- ensemble cards

@dataclass(frozen=True)
class EnsembleMetrics:
    top1: float | None = None             # %, on the first member's data set, test split
    top5: float | None = None
    loss: float | None = None
    ece: float | None = None
    samples: int | None = None
    best_member: str | None = None        # the member with the highest top-1 on the same images
    best_member_top1: float | None = None
    date: str | None = None
    hardware: str | None = None
    command: str | None = None


@dataclass(frozen=True)
class EnsembleCard:
    id: str = ""                          # = the file name without .yaml; zoo:<id>
    description: str = ""
    members: list[str] = field(default_factory=list)   # zoo:<id>, run folders, checkpoints (trainkit.models.hub)
    combine: Literal["mean_logits", "mean_probs", "weighted", "vote"] = "mean_logits"
    weights: list[float] | None = None    # combine=weighted: one per member
    metrics: EnsembleMetrics = field(default_factory=EnsembleMetrics)

    def check(self, key: str) -> None:
        if not self.members:
            raise RecipeError(f"{key}members: at least one member")
        if (self.combine == "weighted") != (self.weights is not None) or (
                self.weights is not None and len(self.weights) != len(self.members)):
            raise RecipeError(f"{key}weights: one per member, exactly when combine=weighted")


def ensembles_dir() -> Path:
    """``zoo/ensembles`` (beside the model cards; ``$TRAINKIT_ZOO`` moves both)."""
    root = Path(__file__).resolve().parents[2] / "zoo"
    return Path(os.environ.get("TRAINKIT_ZOO", root)) / "ensembles"


def ensemble_card_path(card_id: str) -> Path:
    return ensembles_dir() / f"{card_id}.yaml"


def load_ensemble_card(card_id: str) -> EnsembleCard:
    path = ensemble_card_path(card_id)
    if not path.is_file():
        raise CheckpointError(f"zoo:{card_id}: no ensemble card at {path}")
    from trainkit.zoo.cards import read_card
    return read_card(path, EnsembleCard)


def write_ensemble_card(card: EnsembleCard) -> Path:
    path = ensemble_card_path(card.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Ensemble card (schema: trainkit/eval/ensemble.py EnsembleCard). Metrics are written by\n"
              f"#   python evaluate.py zoo:{card.id} --update-card\n")
    path.write_text(header + yaml.safe_dump(to_dict(card), sort_keys=False, default_flow_style=None, width=110))
    return path


def card_with_metrics(card: EnsembleCard, report: dict, *, hardware: str, command: str, date: str) -> EnsembleCard:
    *members, ens = report["rows"]
    best = max(members, key=lambda r: r["top1"])
    metrics = EnsembleMetrics(top1=round(ens["top1"], 2), top5=round(ens["top5"], 2), loss=round(ens["loss"], 4),
                              ece=round(ens["ece"], 4), samples=ens["samples"], best_member=best["name"],
                              best_member_top1=round(best["top1"], 2), date=date, hardware=hardware, command=command)
    return dataclasses.replace(card, metrics=metrics)
