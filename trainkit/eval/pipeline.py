"""The one evaluation pipeline: a resolved model (trainkit.models.hub) on a split of its data set.

train.py's summary, evaluate.py (runs, checkpoints, zoo cards, timm models, ensembles), the
zoo's ``--update-card``, ensembles and soups all open data, check classes, build the eval
loader and run the metric loop here, so the same weights on the same split give the same
top-1 to the last digit whichever tool asks. Settings default to the source's own
(:class:`~trainkit.models.hub.LoadedModel`: a run's eval batch, workers and precision; batch
500, 2 workers and fp32 for zoo cards and other foreign models); each can be overridden.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from trainkit.config import formats
from trainkit.config.recipe import AugmentCfg, DataCfg, RuntimeCfg
from trainkit.data.loaders import Loader, LoaderSettings, make_loader
from trainkit.data.multiscale import TTA
from trainkit.eval.labels import display_names, synset_names
from trainkit.data.sources import DataError, Split, match_classes, open_eval_splits
from trainkit.eval.loop import evaluate
from trainkit.eval.metrics import format_metrics, write_confusion_csv, write_confusion_png
from trainkit.eval.restricted import class_indices, evaluate_restricted
from trainkit.eval.tta import with_tta
from trainkit.config.schema import RecipeError
from trainkit.eval.ensemble import member_logits, meter_for
from trainkit.models.ensemble import combine
from trainkit.models.hub import LoadedModel, loaded_ensemble, resolve
from trainkit.runtime.distributed import DistInfo
from trainkit.zoo.cards import ModelCard
from trainkit.zoo.source import loaded_card

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class EvalOptions:
    """Overrides of a source's evaluation defaults; None keeps the source's own."""
    batch: int | None = None
    workers: int | None = None
    precision: str | None = None


def data_of(loaded: LoadedModel, data_root: str | None = None) -> DataCfg:
    """The data set ``loaded`` is evaluated on: its own, or an ImageFolder at ``data_root``."""
    data = loaded.data
    if data_root is not None:
        data = dataclasses.replace(data, root=data_root) if data is not None else \
            DataCfg(name="imagefolder", root=data_root, holdout_fraction=0.0, eval=loaded.eval)
    if data is None:
        raise DataError(f"{loaded.spec} does not name its data set; give --data-root (an ImageFolder)")
    data.check("data")
    return data


def open_splits(data: DataCfg, classes: list[str] | None, what: str, runtime: RuntimeCfg | None = None,
                subset_ok: bool = False) -> dict[str, Split]:
    """The splits of ``data`` (a folder without train/ is a labelled folder: test/, val/ or flat class folders,
    see :func:`trainkit.data.sources.open_eval_splits`), each with its labels mapped to ``classes`` (the
    model's, when known) BY NAME; one error line lists unknown or missing classes (``subset_ok``: the data's
    classes may be fewer, a subset: see :func:`restricted_to`).
    ``runtime``: where shards from a URL are cached (data.format=webdataset)."""
    splits = open_eval_splits(data, runtime)
    if classes is None:
        return splits
    return {name: match_classes(split, classes, what, f"{data.root} ({split.name})", subset_ok)
            for name, split in splits.items()}


def split_named(splits: dict[str, Split], split: str, data: DataCfg, exact: bool = False) -> Split:
    """The split called ``split``: the one whose own name it is (under data.val_from_train the val/ folder is
    the test key's split, named val, and the hold-out carved from train is named holdout), else the split
    standing in under that key (a CIFAR card's val is its test split). ``exact`` (a split asked for by name on
    the command line): no stand-in; either way a split the data cannot give is one error naming the ones it has."""
    for candidate in splits.values():
        if candidate.name == split:
            return candidate
    if split in splits and not exact:
        return splits[split]
    have = sorted({s.name for s in splits.values()},
                  key=lambda name: (SPLITS.index(name) if name in SPLITS else len(SPLITS), name))
    stand_in = f"; its {split} would be the {splits[split].name} split" if split in splits else ""
    raise DataError(f"--split {split}: {data.root} has no {split} split (it has: {', '.join(have)}{stand_in}); "
                    f"give --split {' or '.join(have)}")


def restricted_to(loaded: LoadedModel, found: list[str], data: DataCfg) -> list[int] | None:
    """The model outputs of the data's classes when they are a strict subset of the model's (10 ImageNet
    synsets for an ImageNet model): evaluation then restricts the logits to them. None otherwise."""
    if loaded.classes is None or found == list(loaded.classes):
        return None
    return class_indices(loaded.classes, found, f"{loaded.spec} on {data.root}")


def loader_settings(loaded: LoadedModel, opts: EvalOptions, device: torch.device) -> LoaderSettings:
    """The source's own loader settings (its runtime and eval batch), with ``opts`` overriding."""
    settings = LoaderSettings.from_runtime(loaded.runtime, opts.batch or loaded.eval_batch, device, train=False)
    return settings if opts.workers is None else dataclasses.replace(settings, workers=opts.workers)


def eval_loader(split: Split, data: DataCfg, loaded: LoadedModel, settings: LoaderSettings, device: torch.device,
                dist: DistInfo = DistInfo()) -> Loader:
    """The eval loader of ``split`` with ``loaded``'s preprocessing and channels (no augmentation)."""
    return make_loader(split, train=False, data=dataclasses.replace(data, eval=loaded.eval), augment=AugmentCfg(),
                       settings=settings, chans=loaded.in_chans, device=device, seed=0,
                       channels_last=loaded.runtime.channels_last, rank=dist.rank, world=dist.world)


def evaluate_ensemble(members: list[LoadedModel], rule: str, weights: list[float] | None, *, split: str = "test",
                      data_cfg: DataCfg | None = None, opts: EvalOptions = EvalOptions(),
                      device: torch.device = torch.device("cpu"), show_progress: bool | str = "auto") -> dict:
    """Per-member and ensemble metrics on one split: ``{"rows": [...], "classes": ..., ...}``.

    ``data_cfg`` defaults to the first member that knows its data set. The ensemble evaluates with
    the foreign defaults of :func:`trainkit.models.hub.loaded_ensemble` (each member its own preprocessing).
    """
    if not members:
        raise RecipeError("an ensemble needs at least one member")
    ensemble = loaded_ensemble("ensemble", members, rule, weights)   # checks classes, rule and weights
    data_cfg = data_cfg or next((m.data for m in members if m.data is not None), None)
    if data_cfg is None:
        raise RecipeError("no member names its data set; give --data-root (an ImageFolder)")
    splits = open_splits(data_cfg, ensemble.classes, "ensemble members")
    settings = loader_settings(ensemble, opts, device)
    precision = opts.precision or ensemble.precision
    chosen = split_named(splits, split, data_cfg)
    loaders = lambda m: eval_loader(chosen, data_cfg, dataclasses.replace(m, runtime=ensemble.runtime),  # noqa: E731
                                    settings, device)
    logits, targets = member_logits(members, loaders, device=device, precision=precision,
                                    show_progress=show_progress)
    n = members[0].num_classes
    rows = [{"name": m.spec, "arch": m.arch, "preprocessing": m.describe_preprocessing(), **meter_for(x, targets, n)}
            for m, x in zip(members, logits)]
    label = f"ensemble ({rule}{', weights ' + ','.join(f'{w:g}' for w in weights) if weights else ''})"
    rows.append({"name": label, "arch": "-", "preprocessing": "each member its own",
                 **meter_for(combine(logits, rule, weights), targets, n)})
    return {"split": split, "rule": rule, "weights": weights, "classes": list(chosen.classes),
            "data_root": data_cfg.root, "precision": precision, "rows": rows}


def evaluate_model(loaded: LoadedModel, *, split: str | None = None, data: DataCfg | None = None,
                   data_root: str | None = None, opts: EvalOptions = EvalOptions(), dist: DistInfo = DistInfo(),
                   device: torch.device = torch.device("cpu"), show_progress: bool | str = "auto",
                   tta_flip: bool = False, tta_sizes: list[int] | None = None, exact_split: bool = False) -> dict:
    """Evaluate a resolved model on ``split`` (default: the source's own) of ``data`` (default: its own).

    ``tta_flip`` / ``tta_sizes``: average softmax over flips and over the eval batch resized to
    each size (see trainkit.data.multiscale.TTA). ``exact_split``: the split a person asked for by name
    must be that split, not the one standing in for it (val read as test on a set without val)."""
    split = split or loaded.split
    data = data or data_of(loaded, data_root)
    splits = open_splits(data, loaded.classes, loaded.spec, loaded.runtime, subset_ok=True)
    chosen = split_named(splits, split, data, exact=exact_split)
    subset = restricted_to(loaded, list(chosen.classes), data)
    model = loaded.model.to(device)
    if loaded.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    settings = loader_settings(loaded, opts, device)
    loader = eval_loader(chosen, data, loaded, settings, device, dist)
    precision = opts.precision or loaded.precision
    if tta_flip or tta_sizes:
        model = TTA(model, tta_sizes, flip=tta_flip)
    else:   # the model's own: data.eval.tta of the recipe that trained it (its summary evaluates this way)
        model = with_tta(model, loaded.eval.tta)
    if subset is None:
        metrics = evaluate(model, loader, num_classes=loaded.num_classes, device=device, precision=precision,
                           show_progress=show_progress, desc=f"eval {split}").compute()
    else:   # the restricted-logit metrics, with top1_all/top5_all over every output beside them
        metrics = evaluate_restricted(model, loader, subset, device=device, precision=precision,
                                      show_progress=show_progress, desc=f"eval {split}")
    info = loaded.info
    # The split's own name: "test" on a set without a test split reads its val split, named val.
    return {"checkpoint": info.get("checkpoint", loaded.spec), "split": chosen.name, "epoch": info.get("epoch"),
            "model": loaded.arch, "precision": precision, "batch": settings.batch,
            "classes": list(chosen.classes), "skipped_images": loader.skipped,
            "recipe_hash": info.get("recipe_hash"), "weights": info.get("weights", "raw"),
            "tta": {"flip": tta_flip, "sizes": list(tta_sizes or []),
                    "views": "" if tta_flip or tta_sizes else loaded.eval.tta}, "metrics": metrics}


def evaluate_card(card: ModelCard, *, data_root: str | None = None, split: str | None = None,
                  limit: int | None = None, batch: int | None = None, device: torch.device = torch.device("cpu"),
                  show_progress: bool | str = "auto") -> dict:
    """A card as it stands (e.g. with a candidate eval preprocessing) through :func:`evaluate_model`;
    ``limit``: a seeded subset of that many images."""
    loaded = loaded_card(card)
    data = data_of(loaded, data_root)
    if limit:
        data = dataclasses.replace(data, limit_train=limit, limit_eval=limit)
    return evaluate_model(loaded, split=split, data=data, opts=EvalOptions(batch=batch), device=device,
                          show_progress=show_progress)


def evaluate_checkpoint(path: str | Path, *, split: str = "test", weights: str = "auto", batch: int | None = None,
                        workers: int | None = None, precision: str | None = None, **kwargs) -> dict:
    """A trainkit checkpoint or run folder through :func:`evaluate_model` (train.py's summary uses this).

    ``weights``: raw, ema or auto (ema when the run picked its best by an EMA metric)."""
    return evaluate_model(resolve(str(path), weights=weights), split=split, opts=EvalOptions(batch, workers, precision),
                          **kwargs)


def write_report(report: dict, out_dir: Path) -> None:
    """metrics.json, per_class.csv, confusion.csv and confusion.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    m, classes = report["metrics"], report["classes"]
    formats.write(out_dir / "metrics.json", formats.METRICS, report)
    names = synset_names(classes)   # ImageNet synset folders: a readable name column beside the id
    named = any(names)
    with open(out_dir / "per_class.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", *(["name"] if named else []), "samples", "recall", "precision", "f1"])
        for i, (cls, row) in enumerate(zip(classes, m["confusion"])):
            values = (m["per_class_recall"][i], m["per_class_precision"][i], m["per_class_f1"][i])
            writer.writerow([cls, *([names[i] or ""] if named else []), sum(row),
                             *("" if v is None else f"{v:.4f}" for v in values)])
    write_confusion_csv(out_dir / "confusion.csv", m["confusion"], classes)
    title = f"{report['model']} on {report['split']}: top-1 {m['top1']:.2f}%"
    write_confusion_png(out_dir / "confusion.png", m["confusion"], display_names(classes), title)


__all__ = ["evaluate_model", "evaluate_card", "evaluate_ensemble", "evaluate_checkpoint", "write_report",
           "format_metrics", "SPLITS", "EvalOptions"]
