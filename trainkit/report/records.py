"""Result records: what tells runs apart, and runs of one variant folded over seeds.

A record is a run's ``summary.json`` (see :func:`trainkit.report.table.collect`) plus what its
run folder says about how it differs from others:

* ``variant``: the recipe keys whose values differ from the recipe file the run names
  (the command-line overrides, as the resolved ``recipe.yaml`` in the run folder shows them),
  without ``train.seed``, the data root (the data set heading says it) and the runtime keys
  that do not change what is trained;
* ``seed``: ``train.seed``.

:func:`group_records` folds records that differ only in the seed into one row with the
mean, sample standard deviation and count of every metric. Everything here works on plain
dicts (no torch), so a results-page generator can use the same records and rows.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import yaml

from trainkit.config.recipe import TRAINED_RUNTIME_KEYS, Recipe, deep_merge, load_tree
from trainkit.config.schema import RecipeError, to_dict
from trainkit.report.table import _is_number

ROOT = Path(__file__).resolve().parents[2]
RESOLVED_RECIPE = "recipe.yaml"

# numbers averaged over the runs of a group (mean, *_std); everything else must agree or is listed
METRICS = ("top1", "top5", "balanced_accuracy", "macro_f1", "loss", "ece", "train_time_s", "img_per_s",
           "peak_mem_mb")
# keys that never make a variant: the seed is folded or shown apart; where the data lives is the data set
# heading's business; runtime keys change how a run executes, not what it trains (but see TRAINED_RUNTIME_KEYS)
NOT_VARIANT = ("train.seed", "data.root", "description")
# facts from summary.json that say how a run executed; shown when they differ between runs of one recipe
EXECUTION = ("world_size", "precision")


# ---- what differs ---------------------------------------------------------------------------------------------

def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


def counts_as_variant(key: str) -> bool:
    if key in NOT_VARIANT:
        return False
    section, _, name = key.partition(".")
    return section != "runtime" or name in TRAINED_RUNTIME_KEYS


def recipe_file_values(recipe: str, cache: dict[str, dict | None]) -> dict[str, Any] | None:
    """The recipe file as a run would resolve it with no overrides (schema defaults filled), flattened;
    None when the file cannot be found or read (then variants come from comparing runs)."""
    if recipe not in cache:
        path = next((p for p in (Path(recipe), ROOT / recipe) if recipe and p.is_file()), None)
        try:
            cache[recipe] = flatten(deep_merge(to_dict(Recipe()), load_tree(path))) if path else None
        except RecipeError:
            cache[recipe] = None
    return cache[recipe]


def read_resolved(run_dir: Path) -> dict[str, Any] | None:
    """The run's resolved recipe (``recipe.yaml``), flattened; None when missing or unreadable."""
    try:
        data = yaml.safe_load((run_dir / RESOLVED_RECIPE).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return flatten(data) if isinstance(data, dict) else None


def annotate(records: list[dict]) -> list[dict]:
    """Records with ``seed``, ``variant`` ({key: value}) and ``variant_text`` added (new dicts).

    ``variant`` holds the keys that differ from the recipe file; when the file cannot be read,
    the keys that differ between the runs naming that recipe. World size and precision join the
    variant where they differ between runs of the same recipe and data set.
    """
    cache: dict[str, dict | None] = {}
    resolved = [read_resolved(Path(r["path"])) if r.get("path") else None for r in records]
    out = []
    for record, config in zip(records, resolved):
        config = config or {}
        reference = recipe_file_values(str(record.get("recipe") or ""), cache)
        if reference is not None:
            # keys the file lacks come from another schema version: not something this run chose
            variant = {k: v for k, v in sorted(config.items()) if counts_as_variant(k) and k in reference
                       and reference[k] != v}
        else:   # no recipe file to read: what differs between the runs that name it
            peers = [c or {} for r, c in zip(records, resolved) if same_recipe(r, record)]
            variant = {k: v for k, v in sorted(config.items()) if counts_as_variant(k)
                       and any(p.get(k) != v for p in peers)}
        out.append({**record, "seed": record.get("seed", config.get("train.seed")), "variant": variant})
    for record, config in zip(out, resolved):
        peers = [r for r in out if same_recipe(r, record)]
        for key in EXECUTION:
            said = record["variant"].get(f"train.{key}")   # train.precision=fp32 already says precision=fp32
            if len({str(r.get(key)) for r in peers}) > 1 and said != record.get(key):
                record["variant"] = {**record["variant"], key: record.get(key)}
        # None: no recipe.yaml to tell (an old or copied summary), which is not "as the recipe file says"
        record["variant_text"] = variant_text(record["variant"]) if config is not None or record["variant"] \
            else None
    return out


def same_recipe(a: dict, b: dict) -> bool:
    return (a.get("dataset"), a.get("recipe")) == (b.get("dataset"), b.get("recipe"))


def variant_text(variant: dict[str, Any]) -> str:
    """``optim.lr=0.05 schedule.epochs=2``; empty for a run exactly as its recipe file says."""
    return " ".join(f"{k}={_scalar(v)}" for k, v in variant.items())


def _scalar(value: Any) -> str:
    """A value as it would be written after ``key=`` on the command line."""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    if value is None or isinstance(value, bool):
        return yaml.safe_dump(value).removesuffix("\n...\n").strip()
    return str(value)


# ---- folding seeds --------------------------------------------------------------------------------------------

def group_key(record: dict) -> tuple:
    """Runs with equal keys differ at most in their seed."""
    return (record.get("dataset"), record.get("recipe"), record.get("variant_text"), record.get("split"),
            record.get("selected_on"))


def group_records(records: list[dict]) -> list[dict]:
    """One row per group of records differing only in ``train.seed``: the first record's fields, each metric's
    mean (``top1``) with ``top1_std`` (sample std, None for one run), ``n``, ``seeds`` and ``runs``."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(group_key(record), []).append(record)
    rows = []
    for members in groups.values():
        row = {**members[0], "n": len(members), "runs": [m.get("run") for m in members],
               "paths": [m.get("path") for m in members],
               "seeds": sorted((m["seed"] for m in members if m.get("seed") is not None), key=str)}
        for key in METRICS:
            values = [float(m[key]) for m in members if _is_number(m.get(key))]
            row[key] = statistics.fmean(values) if values else None
            row[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)
    return rows


def ungrouped(records: list[dict]) -> list[dict]:
    """Every record as its own row; the seed joins the variant where runs of one variant differ in it."""
    rows = []
    for record in records:
        peers = [r for r in records if group_key(r) == group_key(record)]
        row = {**record, "n": 1, "runs": [record.get("run")]}
        if len({str(r.get("seed")) for r in peers}) > 1:
            seed = f"train.seed={record.get('seed')}"
            row["variant_text"] = " ".join(filter(None, (record.get("variant_text"), seed)))
        rows.append(row)
    return rows


__all__ = ["METRICS", "annotate", "flatten", "group_records", "ungrouped", "variant_text"]
