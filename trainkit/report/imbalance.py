"""Result records of imbalanced-data runs and their generated Markdown table.

A record is a small JSON reduced from a run's ``summary.json`` (test metrics of the checkpoint chosen
on val, per-class recall, training class counts, the schedule, hardware and commit), committed under
``results/<benchmark>/``; the table is regenerated from the records, never typed. No torch imports.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterable

import yaml

from trainkit.config.recipe import LossCfg

# Published top-1 on lossless CIFAR-10-LT ratio 100, ResNet-32, 200 epochs: Cao et al. 2019 (LDAM-DRW),
# table 2, given there as top-1 error; 100 - error here. Keyed by recipe stem; citations, not our runs.
PUBLISHED_CIFAR10_LT = {
    "cifar10_lt_resnet32_ce": (70.36, "ERM"),
    "cifar10_lt_resnet32_focal": (70.38, "Focal"),
    "cifar10_lt_resnet32_weighted_ce": (72.37, "CB RW"),
    "cifar10_lt_resnet32_ldam_drw": (77.03, "LDAM-DRW"),
}
TAIL_CLASSES = 3      # "tail recall": mean test recall of the classes with the fewest training images


class RecordError(ValueError):
    """A user-facing problem with a run folder or record; one line."""


def record_from_run(run_dir: Path) -> dict:
    """The record of one finished run folder (summary.json + recipe.yaml)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise RecordError(f"{run_dir}: not a finished run folder ({' '.join(str(err).split())})") from None
    if "balanced_accuracy" not in summary or "train_class_counts" not in summary:
        raise RecordError(f"{run_dir}/summary.json: no balanced_accuracy / train_class_counts (an older trainkit)")
    counts = summary["train_class_counts"]
    recall = {name: c["recall"] for name, c in summary["per_class"].items()}
    rare = sorted(counts, key=lambda name: counts[name])[:TAIL_CLASSES]
    sch = recipe["schedule"]
    return {
        "recipe": Path(summary["recipe"]).stem, "recipe_hash": summary["recipe_hash"], "run": summary["run"],
        "seed": recipe["train"]["seed"], "loss": loss_keys(recipe["loss"]),
        "model": summary["model"], "model_kwargs": recipe["model"].get("kwargs") or {},
        "schedule": {"epochs": sch["epochs"], "name": sch["name"], "warmup_epochs": sch["warmup_epochs"],
                     "milestones": sch["milestones"], "gamma": sch["gamma"]},
        "global_batch": recipe["train"]["global_batch"], "precision": summary["precision"],
        "imbalance": recipe["data"]["imbalance"], "sampler": recipe["data"].get("sampler", "shuffle"),
        "train_images": sum(counts.values()), "train_class_counts": counts,
        # what chose the tested checkpoint: "val" (best.pt by best_val's metric) or "last"
        "selected_on": {"rule": summary.get("selected_on", "val"), **summary["best_val"]},
        "test": {"split": summary["split"], "samples": summary["samples"], "top1": summary["top1"],
                 "balanced_accuracy": summary["balanced_accuracy"], "macro_f1": summary["macro_f1"],
                 "tail_recall": statistics.fmean(recall[name] or 0.0 for name in rare), "per_class_recall": recall,
                 "per_class_samples": {name: c["samples"] for name, c in summary["per_class"].items()}},
        "train_time_s": summary["train_time_s"], "img_per_s": summary.get("img_per_s"),
        "hardware": summary["hardware"], "torch": summary["torch"], "git_commit": summary["git_commit"],
    }


def loss_keys(loss: dict) -> dict:
    """The loss name and the keys that differ from their defaults (what distinguishes the method)."""
    defaults = {f.name: f.default for f in dataclasses.fields(LossCfg)}
    return {"name": loss["name"], **{k: v for k, v in loss.items() if k != "name" and v != defaults.get(k)}}


def write_record(record: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{record['recipe']}-seed{record['seed']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def read_records(folder: Path) -> list[dict]:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise RecordError(f"no records (*.json) in {folder}")
    try:
        return [json.loads(f.read_text()) for f in files]
    except (OSError, json.JSONDecodeError) as err:
        raise RecordError(f"{folder}: unreadable record ({' '.join(str(err).split())})") from None


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def _loss_text(loss: dict) -> str:
    keys = [f"{k}={v}" for k, v in loss.items() if k != "name"]
    return loss["name"] + (f" ({', '.join(keys)})" if keys else "")


def _schedule_text(r: dict) -> str:
    s = r["schedule"]
    steps = f", lr x{s['gamma']:g} at epochs {', '.join(f'{m:g}' for m in s['milestones'])}" if s["milestones"] else ""
    return (f"{s['epochs']} epochs {s['name']} (warmup {s['warmup_epochs']:g}{steps}), batch {r['global_batch']}, "
            f"{r['precision']}")


def to_markdown(records: Iterable[dict], published: dict[str, tuple[float, str]] | None = None) -> str:
    """One row per recipe (seeds pooled: mean ± std), best test balanced accuracy first."""
    published = PUBLISHED_CIFAR10_LT if published is None else published
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["recipe"], []).append(r)
    first = next(iter(groups.values()))[0]
    head = [
        "| recipe | loss | seeds | test top-1 | test balanced acc. | test macro-F1 | tail recall (3 rarest) "
        "| selected on val (balanced acc., epoch) | published top-1 | train time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    rows = []
    for name, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        t = [r["test"] for r in rs]
        ref = published.get(name)
        val = "; ".join(f"{r['selected_on']['value']:.2f} @ {r['selected_on']['epoch']}"
                        if r["selected_on"]["rule"] == "val" else "last epoch" for r in rs)
        bal = statistics.fmean(x["balanced_accuracy"] for x in t)
        rows.append((bal, f"| {name} | {_loss_text(rs[0]['loss'])} | {', '.join(str(r['seed']) for r in rs)} "
                          f"| {_mean_std([x['top1'] for x in t])} | {_mean_std([x['balanced_accuracy'] for x in t])} "
                          f"| {_mean_std([x['macro_f1'] for x in t])} | {_mean_std([x['tail_recall'] for x in t])} "
                          f"| {val} | {f'{ref[0]:.2f} ({ref[1]})' if ref else '-'} "
                          f"| {_minutes(statistics.fmean(r['train_time_s'] for r in rs))} |"))
    rows.sort(key=lambda pair: -pair[0] if math.isfinite(pair[0]) else math.inf)
    counts = ", ".join(str(v) for v in first["train_class_counts"].values())
    notes = [
        "",
        f"Schedule (all rows): {_schedule_text(first)}; model {first['model']}"
        f"{' (LDAM: cosine classifier)' if any(g[0]['model_kwargs'] for g in groups.values()) else ''}.",
        f"Training set: {first['train_images']} images ({counts} per class; data.imbalance "
        f"{json.dumps(first['imbalance'], sort_keys=True)}); val: a balanced split drawn before the long tail; "
        f"test: the balanced test/ split ({first['test']['samples']} images), never used for selection.",
        *(["On a test split with the same number of images per class, top-1 equals balanced accuracy; macro-F1 "
           "and tail recall tell the methods apart further."]
          if len(set(first["test"].get("per_class_samples", {}).values())) == 1 else []),
        f"Hardware: {first['hardware']}, torch {first['torch']}, commit {first['git_commit']}.",
        "Published: lossless CIFAR-10, 200 epochs (Cao et al. 2019, table 2); compare orderings and gaps, "
        "not absolute numbers.",
    ]
    return "\n".join(head + [row for _, row in rows] + notes) + "\n"


def _minutes(seconds: Any) -> str:
    return f"{seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else "-"
