"""Evaluate a checkpoint on a split, exactly as training's final summary does, and write reports.

train.py's summary and evaluate.py both call :func:`evaluate_checkpoint`, so the
same weights on the same split give the same top-1 to the last digit.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import torch

from trainkit.runtime.checkpoint import CheckpointError, load_checkpoint
from trainkit.data.loaders import LoaderSettings, make_loader
from trainkit.data.sources import open_source, resolve_splits
from trainkit.runtime.distributed import DistInfo
from trainkit.train.engine import evaluate
from trainkit.eval.metrics import format_metrics, write_confusion_csv, write_confusion_png
from trainkit.models.build import build_model
from trainkit.data.multiscale import TTA
from trainkit.config.recipe import parse_recipe

SPLITS = ("train", "val", "test")


def pick_weights(ckpt: dict, weights: str, path: Path) -> str:
    """auto: the EMA weights when the run chose its best checkpoint by an EMA metric."""
    if weights == "auto":
        best_by = parse_recipe(ckpt["recipe"]).train.best_metric
        return "ema" if best_by.startswith("ema_") and ckpt.get("ema") else "raw"
    if weights == "ema" and not ckpt.get("ema"):
        raise CheckpointError(f"{path}: no EMA weights in this checkpoint (the run had no ema.decay)")
    return weights


def model_from_checkpoint(ckpt: dict, path: Path, weights: str = "raw") -> torch.nn.Module:
    recipe = parse_recipe(ckpt["recipe"])
    model = build_model(dataclasses.replace(recipe.model, pretrained=None), ckpt["num_classes"], ckpt["in_chans"])
    try:
        model.load_state_dict(ckpt["ema"]["model"] if weights == "ema" else ckpt["model"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit model {recipe.model.name}: {first}") from None
    return model


def evaluate_checkpoint(path: str | Path, *, split: str = "test", dist: DistInfo = DistInfo(),
                        device: torch.device = torch.device("cpu"), data_root: str | None = None,
                        batch: int | None = None, workers: int | None = None, precision: str | None = None,
                        show_progress: bool | str = "auto", weights: str = "auto", tta_flip: bool = False,
                        tta_sizes: list[int] | None = None) -> dict:
    """Evaluate a trainkit checkpoint; settings default to those the run trained with.

    ``weights``: raw, ema or auto (ema when the run picked its best by an EMA metric).
    ``tta_flip`` / ``tta_sizes``: average softmax over flips and over the eval batch
    resized to each size (see trainkit.data.multiscale.TTA)."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    recipe = parse_recipe(ckpt["recipe"])
    if data_root is not None:
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, root=data_root))
    plan, rt = ckpt["plan"], recipe.runtime
    splits = resolve_splits(recipe.data, open_source(recipe.data, recipe.runtime))
    classes = list(splits["train"].classes)
    if classes != list(ckpt["classes"]):
        raise CheckpointError(f"{path}: the data's classes differ from the checkpoint's "
                              f"({len(classes)} vs {len(ckpt['classes'])} classes)")
    weights = pick_weights(ckpt, weights, path)
    model = model_from_checkpoint(ckpt, path, weights).to(device)
    channels_last = plan.get("channels_last", rt.channels_last is True)   # the layout the run used
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    settings = LoaderSettings.from_runtime(rt, batch or plan["eval_batch"], device, train=False)
    if workers is not None:
        settings = dataclasses.replace(settings, workers=workers)
    loader = make_loader(splits[split], train=False, data=recipe.data, augment=recipe.augment, settings=settings,
                         chans=ckpt["in_chans"], device=device, seed=recipe.train.seed,
                         channels_last=channels_last, rank=dist.rank, world=dist.world)
    precision = precision or plan["precision"]
    if tta_flip or tta_sizes:
        model = TTA(model, tta_sizes, flip=tta_flip)
    meter = evaluate(model, loader, num_classes=ckpt["num_classes"], device=device, precision=precision,
                     show_progress=show_progress, desc=f"eval {split}")
    # The split's own name: "test" on a set without a test split reads its val split, named val.
    return {"checkpoint": str(path), "split": splits[split].name, "epoch": ckpt["epoch"], "model": recipe.model.name,
            "precision": precision, "batch": settings.batch, "classes": classes, "skipped_images": loader.skipped,
            "recipe_hash": plan["recipe_hash"], "weights": weights,
            "tta": {"flip": tta_flip, "sizes": list(tta_sizes or [])}, "metrics": meter.compute()}


def write_report(report: dict, out_dir: Path) -> None:
    """metrics.json, per_class.csv, confusion.csv and confusion.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    m, classes = report["metrics"], report["classes"]
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    with open(out_dir / "per_class.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "samples", "recall", "precision", "f1"])
        for i, (name, row) in enumerate(zip(classes, m["confusion"])):
            values = (m["per_class_recall"][i], m["per_class_precision"][i], m["per_class_f1"][i])
            writer.writerow([name, sum(row), *("" if v is None else f"{v:.4f}" for v in values)])
    write_confusion_csv(out_dir / "confusion.csv", m["confusion"], classes)
    title = f"{report['model']} on {report['split']}: top-1 {m['top1']:.2f}%"
    write_confusion_png(out_dir / "confusion.png", m["confusion"], classes, title)


__all__ = ["evaluate_checkpoint", "write_report", "format_metrics", "SPLITS"]
