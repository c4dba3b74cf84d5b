"""Result records: the one record of a finished run, what tells runs apart, and runs of one variant folded
over seeds.

A record (:func:`to_record`, :func:`record_from_run`) is a run folder's ``summary.json`` and resolved
``recipe.yaml`` reduced to a small JSON dict: recipe file and hash, variant, data set and split, seed, epochs,
the metrics (top-1/top-5/loss/ECE, balanced accuracy, macro-F1, per-class recall, training class counts),
what chose the checkpoint, time, img/s, hardware, versions, commit, date and the train.py command. The same
record feeds ``compare.py RUNS`` (in memory), the committed records under ``results/records/<data set>/``
(``compare.py record``), ``recipes/RESULTS.md`` (``compare.py results``), the CIFAR-10-LT table
(trainkit.report.imbalance) and the ablation tables. Besides the summary's own keys it says how the run
differs from others:

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

import hashlib
import re
import shlex
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from trainkit.config import formats
from trainkit.config.paths import project_file, project_root, records_dir
from trainkit.config.recipe import (TRAINED_RUNTIME_KEYS, LossCfg, Recipe, deep_merge, hashed_values, load_tree,
                                    parse_recipe)
from trainkit.config.schema import RecipeError, to_dict
from trainkit.report.provenance import commit_problem
from trainkit.report.table import SUMMARY, TableError, is_number, collect, read_summary

RESOLVED_RECIPE = "recipe.yaml"
RECORDS_DIR = records_dir()   # committed records: <data set>/<recipe>[--<variant>]-seed<N>.json

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
        path = project_file(recipe) if recipe else None
        path = path if path and path.is_file() else None
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
    # the data set's short id where known: the same data at another path on another machine is the same data set
    return (record.get("dataset_id") or record.get("dataset"), record.get("recipe"), record.get("variant_text"),
            record.get("split"), record.get("selected_on"))


def group_records(records: list[dict], key: Callable[[dict], tuple] = group_key) -> list[dict]:
    """One row per group of records differing only in ``train.seed`` (or equal under ``key``): the first
    record's fields, each metric's mean (``top1``) with ``top1_std`` (sample std, None for one run), ``n``,
    ``seeds``, ``runs`` and ``members`` (the records)."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault(key(record), []).append(record)
    rows = []
    for members in groups.values():
        row = {**members[0], "n": len(members), "runs": [m.get("run") for m in members], "members": members,
               "paths": [m.get("path") for m in members],
               "seeds": sorted((m["seed"] for m in members if m.get("seed") is not None), key=str)}
        for key in METRICS:
            values = [float(m[key]) for m in members if is_number(m.get(key))]
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


# ---- the record -----------------------------------------------------------------------------------------------

class RecordError(TableError, RecipeError):
    """A user-facing problem with a run folder or a record file; one line (compare.py's TableError, and a
    RecipeError for the entry points that print RecipeErrors as one line: zoo.py, ablate.py)."""


# summary keys a record keeps as they are (the table's columns read them under these names)
KEPT = ("run", "recipe_hash", "model", "params", "epochs", "split", "samples", "selected_on", "best_val", "val_top1",
        "weights", "top1", "top5", "loss", "ece", "balanced_accuracy", "macro_f1", "train_class_counts",
        "train_time_s", "img_per_s", "peak_mem_mb", "hardware", "world_size", "precision", "torch", "timm",
        "git_commit", "dataset")


def to_record(annotated: dict, config: dict[str, Any] | None, *, variant_name: str | None = None,
              ablation: dict | None = None) -> dict:
    """The record of one annotated summary (:func:`annotate`) and its flattened resolved recipe (None: unknown).

    In memory it keeps ``path`` (the run folder) for charts; :func:`write_record` leaves it out."""
    s = annotated
    record: dict[str, Any] = {"recipe": recipe_relpath(s.get("recipe")),
                              **{k: s.get(k) for k in KEPT},
                              "dataset_id": dataset_id(config) if config else None,
                              "seed": s.get("seed"), "variant": s.get("variant") or {},
                              "variant_text": s.get("variant_text"), "variant_name": variant_name}
    per_class = s.get("per_class") if isinstance(s.get("per_class"), dict) else None
    if per_class:
        record["per_class_recall"] = {name: c.get("recall") for name, c in per_class.items()}
        record["per_class_samples"] = {name: c.get("samples") for name, c in per_class.items()}
    if config:
        record["setup"] = setup_of(config)
        record["command"] = train_command(record["recipe"], record["variant"], record["seed"], config)
    record["date"] = run_date(s.get("run"), s.get("path"))
    if ablation:
        record["ablation"] = ablation
    if s.get("path"):
        record["path"] = s["path"]
    return record


def record_from_run(run_dir: Path, *, variant_name: str | None = None, ablation: dict | None = None) -> dict:
    """The record of one finished run folder (``summary.json`` + ``recipe.yaml``); one-line RecordError when it
    is not one, or when the recipe file it names cannot be read (then nobody can tell its variant)."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    summary = read_summary(run_dir / SUMMARY, problems.append) if (run_dir / SUMMARY).is_file() else None
    config = read_resolved(run_dir)
    if summary is None or config is None:
        what = problems[0].removeprefix("warning: skipping ") if problems else \
            f"no {SUMMARY}" if summary is None else f"no readable {RESOLVED_RECIPE}"
        raise RecordError(f"{run_dir}: not a finished run folder ({what})")
    recipe = str(summary.get("recipe") or "")
    if recipe_file_values(recipe, {}) is None:
        raise RecordError(f"{run_dir}: its recipe file {recipe or '(none)'} is not readable from {project_root()}, "
                          f"so its variant (the keys it changed) cannot be told; records are of shipped recipes")
    annotated = annotate([summary])[0]
    if variant_name and not annotated["variant"]:
        raise RecordError(f"{run_dir}: --variant {variant_name}: this run changed none of {recipe}'s keys; it is the "
                          f"recipe as shipped, not a variant")
    record = to_record(annotated, config, variant_name=variant_name, ablation=ablation)
    record["recipe_values"] = recipe_values(run_dir)
    return record


def recipe_values(run_dir: Path) -> dict | None:
    """What the run's recipe hash covers (trainkit.config.recipe.hashed_values of its resolved ``recipe.yaml``),
    kept in the record so a later change of the hash scheme can re-key the record from the record alone; None
    when the resolved recipe no longer parses under this schema."""
    try:
        return hashed_values(parse_recipe(yaml.safe_load((Path(run_dir) / RESOLVED_RECIPE).read_text())))
    except (OSError, yaml.YAMLError, RecipeError):
        return None


def records_from_runs(paths: Iterable[str | Path]) -> list[dict]:
    """The records of every run folder under ``paths`` (compare.py's table), variants told apart together."""
    summaries = annotate(collect(paths))
    return [to_record(s, read_resolved(Path(s["path"]))) for s in summaries]


def recipe_relpath(recipe: Any) -> str | None:
    """``recipes/x.yaml`` for a recipe inside this repository's recipes/ (however the run named it)."""
    if not recipe:
        return None
    path = Path(str(recipe))
    if path.is_absolute() and "recipes" in path.parts:
        rel = Path(*path.parts[len(path.parts) - 1 - path.parts[::-1].index("recipes"):])
        return rel.as_posix() if (project_root() / rel).is_file() else str(recipe)
    return path.as_posix()


def dataset_id(config: dict[str, Any]) -> str:
    """A short name for the data set a run trained on, the records' folder: ``fashion_mnist``, the ImageFolder's
    folder name (``cifar10-jpeg``, ``imagenette-dev``), ``-lt`` added for a long-tailed subset."""
    name = str(config.get("data.name") or "unknown")
    root = config.get("data.root")
    if name == "imagefolder" and root:
        name = Path(str(root).rstrip("/")).name or name
    if config.get("data.imbalance.ratio") is not None or isinstance(config.get("data.imbalance"), dict):
        name += "-lt"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def setup_of(config: dict[str, Any]) -> dict:
    """What a table needs to describe the schedule and method without the whole recipe."""
    loss_defaults = flatten({"loss": to_dict(LossCfg())})
    loss = {"name": config.get("loss.name")}
    loss.update({k.removeprefix("loss."): v for k, v in config.items() if k.startswith("loss.") and k != "loss.name"
                 and k in loss_defaults and v != loss_defaults[k]})
    imbalance = {k.removeprefix("data.imbalance."): v for k, v in config.items() if k.startswith("data.imbalance.")}
    return {"schedule": {k: config.get(f"schedule.{k}") for k in ("name", "epochs", "warmup_epochs", "milestones",
                                                                  "gamma")},
            "global_batch": config.get("train.global_batch"), "loss": loss,
            "model_kwargs": {k.removeprefix("model.kwargs."): v for k, v in config.items()
                             if k.startswith("model.kwargs.")},
            "imbalance": imbalance or None, "sampler": config.get("data.sampler")}


def train_command(recipe: str | None, variant: dict[str, Any], seed: Any, config: dict[str, Any]) -> str:
    """The train.py command that repeats the run (its variant, seed and data root), rebuilt from recipe.yaml."""
    parts = ["python train.py", recipe or "?"]
    parts += [shlex.quote(f"{k}={_scalar(v)}") for k, v in variant.items()]
    if config.get("data.root") is not None and "data.root" not in variant:
        parts.append(shlex.quote(f"data.root={config['data.root']}"))
    if seed is not None:
        parts.append(f"train.seed={seed}")
    return " ".join(parts)


def run_date(run: Any, path: Any) -> str | None:
    """YYYY-MM-DD the run started: from the run folder's ``-YYYYMMDD-HHMMSS`` name, else its summary's mtime."""
    found = re.search(r"(20\d\d)(\d\d)(\d\d)-\d{6}", str(run or ""))
    if found:
        return "-".join(found.groups())
    try:
        return time.strftime("%Y-%m-%d", time.gmtime((Path(path) / SUMMARY).stat().st_mtime)) if path else None
    except OSError:
        return None


def record_name(record: dict) -> str:
    """``quickstart-seed0``, ``quickstart--budget-seed1``; an unnamed variant gets a short hash of its keys;
    an ablation run ``ablation-<id>/<NN>-<step>-seed<S>``."""
    stem = Path(str(record.get("recipe") or "unknown")).stem
    seed = f"seed{record.get('seed')}"
    ablation = record.get("ablation")
    if ablation:
        step = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(ablation.get("step_name") or "step")).strip("_")
        return f"ablation-{ablation['id']}/{int(ablation['step']):02d}-{step}-{seed}"
    name = record.get("variant_name")
    if not name and record.get("variant"):
        name = "v" + hashlib.sha256(str(record.get("variant_text")).encode()).hexdigest()[:6]
    return f"{stem}--{name}-{seed}" if name else f"{stem}-{seed}"


def record_path(record: dict, root: Path = RECORDS_DIR) -> Path:
    return Path(root) / str(record.get("dataset_id") or "unknown") / f"{record_name(record)}.json"


def write_record(record: dict, root: Path = RECORDS_DIR, *, allow_dirty: bool = False) -> Path:
    """Write the record (without its local ``path``) as ``<root>/<data set>/<name>.json``; a rerun of the same
    recipe, variant and seed replaces its record.

    A record must be traceable to code: the run's ``git_commit`` clean and in this project's history
    (trainkit.report.provenance). Otherwise one-line RecordError, unless ``allow_dirty``: then the record says
    why in ``commit_problem`` and RESULTS.md marks its row."""
    problem = commit_problem(record.get("git_commit"))
    if problem and not allow_dirty:
        raise RecordError(f"{record.get('run') or record.get('path')}: {problem}; commit the code and train again "
                          f"from a clean tree, or give --allow-dirty (the record and RESULTS.md then say so)")
    record = {**record, "commit_problem": problem}
    path = record_path(record, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {k: v for k, v in record.items() if k != "path"}
    try:
        path.write_text(formats.dumps(formats.RECORD, body, where=path))
    except formats.FormatError as err:
        raise RecordError(str(err)) from None
    return path


def read_records(root: Path = RECORDS_DIR) -> list[dict]:
    """Every committed record below ``root`` (sorted by path), each with ``record_file`` (relative to root)."""
    root = Path(root)
    if not root.is_dir():
        raise RecordError(f"{root}: no such records folder")
    records = []
    for file in sorted(root.rglob("*.json")):
        data = read_record(file)
        data["record_file"] = file.relative_to(root).as_posix()
        records.append(data)
    return records


def read_record(file: Path) -> dict:
    """One record file (trainkit.config.formats.RECORD, older versions upgraded); one-line RecordError naming the
    file and field when it is unreadable or not a record."""
    try:
        return formats.read(file, formats.RECORD)
    except formats.FormatError as err:
        raise RecordError(str(err)) from None


__all__ = ["METRICS", "RECORDS_DIR", "RecordError", "annotate", "dataset_id", "flatten", "group_records",
           "read_record", "read_records", "record_from_run", "records_from_runs", "record_name", "record_path",
           "to_record", "ungrouped", "variant_text", "write_record"]
