"""The table of imbalanced-data runs (CIFAR-10-LT): per method, test top-1, balanced accuracy, macro-F1
and tail recall over seeds, the val selection, and published figures beside them.

Built from the one result record (trainkit.report.records: test metrics of the checkpoint chosen on
val, per-class recall, training class counts, the schedule in ``setup``, hardware and commit), the same
records ``recipes/RESULTS.md`` shows; regenerated, never typed. No torch imports.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterable

# Published top-1 on lossless CIFAR-10-LT ratio 100, ResNet-32, 200 epochs: Cao et al. 2019 (LDAM-DRW),
# table 2, given there as top-1 error; 100 - error here. Keyed by recipe stem; citations, not our runs.
PUBLISHED_CIFAR10_LT = {
    "cifar10_lt_resnet32_ce": (70.36, "ERM"),
    "cifar10_lt_resnet32_focal": (70.38, "Focal"),
    "cifar10_lt_resnet32_weighted_ce": (72.37, "CB RW"),
    "cifar10_lt_resnet32_ldam_drw": (77.03, "LDAM-DRW"),
}
TAIL_CLASSES = 3      # "tail recall": mean test recall of the classes with the fewest training images


def tail_recall(record: dict, tail: int = TAIL_CLASSES) -> float:
    """Mean test recall of the ``tail`` classes with the fewest training images (a class never predicted: 0)."""
    counts, recall = record["train_class_counts"], record["per_class_recall"]
    rare = sorted(counts, key=lambda name: counts[name])[:tail]
    return statistics.fmean(recall.get(name) or 0.0 for name in rare)


def _stem(record: dict) -> str:
    return Path(str(record["recipe"])).stem


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"


def _loss_text(loss: dict) -> str:
    keys = [f"{k}={v}" for k, v in loss.items() if k != "name"]
    return loss["name"] + (f" ({', '.join(keys)})" if keys else "")


def _schedule_text(r: dict) -> str:
    s = r["setup"]["schedule"]
    steps = f", lr x{s['gamma']:g} at epochs {', '.join(f'{m:g}' for m in s['milestones'])}" if s["milestones"] else ""
    batch = r["setup"]["global_batch"]
    return f"{s['epochs']} epochs {s['name']} (warmup {s['warmup_epochs']:g}{steps}), batch {batch}"


def to_markdown(records: Iterable[dict], published: dict[str, tuple[float, str]] | None = None) -> str:
    """One row per recipe (seeds pooled: mean ± std), best test balanced accuracy first."""
    published = PUBLISHED_CIFAR10_LT if published is None else published
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(_stem(r), []).append(r)
    first = next(iter(groups.values()))[0]
    head = [
        "| recipe | loss | seeds | test top-1 | test balanced acc. | test macro-F1 | tail recall (3 rarest) "
        "| selected on val (balanced acc., epoch) | published top-1 | train time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    rows = []
    for name, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        ref = published.get(name)
        val = "; ".join(f"{r['best_val']['value']:.2f} @ {r['best_val']['epoch']}"
                        if r.get("selected_on") in ("val", "holdout") and r.get("best_val") else "last epoch"
                        for r in rs)
        bal = statistics.fmean(r["balanced_accuracy"] for r in rs)
        rows.append((bal, f"| {name} | {_loss_text(rs[0]['setup']['loss'])} | {', '.join(str(r['seed']) for r in rs)} "
                          f"| {_mean_std([r['top1'] for r in rs])} | {_mean_std([r['balanced_accuracy'] for r in rs])} "
                          f"| {_mean_std([r['macro_f1'] for r in rs])} | {_mean_std([tail_recall(r) for r in rs])} "
                          f"| {val} | {f'{ref[0]:.2f} ({ref[1]})' if ref else '-'} "
                          f"| {_minutes(statistics.fmean(r['train_time_s'] for r in rs))} |"))
    rows.sort(key=lambda pair: -pair[0] if math.isfinite(pair[0]) else math.inf)
    counts = ", ".join(str(v) for v in first["train_class_counts"].values())
    setup = first["setup"]
    notes = [
        "",
        f"Schedule (all rows): {_schedule_text(first)}, {first['precision']}; model {first['model']}"
        f"{' (LDAM: cosine classifier)' if any(g[0]['setup']['model_kwargs'] for g in groups.values()) else ''}.",
        f"Training set: {sum(first['train_class_counts'].values())} images ({counts} per class; data.imbalance "
        f"{json.dumps(setup['imbalance'], sort_keys=True)}); val: a balanced split drawn before the long tail; "
        f"test: the balanced test/ split ({first['samples']} images), never used for selection.",
        *(["On a test split with the same number of images per class, top-1 equals balanced accuracy; macro-F1 "
           "and tail recall tell the methods apart further."]
          if len(set((first.get("per_class_samples") or {}).values())) == 1 else []),
        f"Hardware: {first['hardware']}, torch {first['torch']}, commit {first['git_commit']}.",
        "Published: lossless CIFAR-10, 200 epochs (Cao et al. 2019, table 2); compare orderings and gaps, "
        "not absolute numbers.",
    ]
    return "\n".join(head + [row for _, row in rows] + notes) + "\n"


def tables_markdown(records: list[dict]) -> str:
    """One :func:`to_markdown` table per schedule (runs of another length are not comparable rows)."""
    by_schedule: dict[str, list[dict]] = {}
    for r in records:
        by_schedule.setdefault(json.dumps(r["setup"]["schedule"], sort_keys=True), []).append(r)
    ordered = sorted(by_schedule.values(), key=lambda rs: -float(rs[0]["setup"]["schedule"]["epochs"]))
    return "\n".join(to_markdown(rs) for rs in ordered)


def _minutes(seconds: Any) -> str:
    return f"{seconds / 60:.1f} min" if isinstance(seconds, (int, float)) else "-"
