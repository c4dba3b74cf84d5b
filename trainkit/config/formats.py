"""Every file the project writes, typed and versioned: the one place that says what a file holds.

Each format is a dataclass of its fields (type hints checked by trainkit.config.schema.convert, the recipes' own
strict converter), a ``format_version`` and the upgrades that bring an older version to the current one:

- ``SUMMARY``: ``<run>/summary.json``, written by train.trainer.Trainer.summarize
- ``PLAN``: ``<run>/plan.json``, train.trainer.write_run_header
- ``METRICS_ROW``: each line of ``<run>/metrics.jsonl``, train.callbacks (the epoch logger)
- ``METRICS``: ``<out>/metrics.json``, eval.pipeline.write_report (evaluate.py)
- ``TRIAL``: ``<sweep>/trials/<n>/trial.json``, sweep.worker
- ``FINAL_TEST``: ``<sweep>/final_test.json``, commands.sweep (--final-test eval or retrain)
- ``RECORD``: ``results/records/<data set>/<name>.json``, report.records.write_record
- ``BENCHMARK``: ``benchmarks/results/<section>.json``, benchmarks/run.py
- ``PHOTOS_BENCHMARK``: ``benchmarks/results/finetune_photos.json``, benchmarks/finetune_photos.py
- ``PHOTOS_ROW``: ``benchmarks/results/photos/<row>[-s<seed>].json``, benchmarks/photos_table.py
- ``TRANSFER_CELL``: ``benchmarks/results/transfer/<cell>.json``, benchmarks/transfer_study.py

Writers call :func:`dump` (or :func:`write`), which stamps ``format_version`` and checks the fields; readers call
:func:`read` / :func:`read_lines` / :func:`load`, which upgrade an older file and check it. A file without
``format_version`` is version 0 (everything written before this module), upgraded on read by the format's
``upgrades``: migration lives here and nowhere else. A missing required field, a value of the wrong type, a
version newer than this code knows, or a file that is not JSON is one :class:`FormatError` line naming the file
and the field, never a KeyError far away. Keys a format does not declare are kept as they are (a newer writer's
additions, or free-form detail such as per-class tables): the version goes up when a declared key is removed
or changes meaning, and the upgrade says how.

Readers get plain dicts back (records, rows and tables merge and annotate dicts); the dataclasses are the
declaration and the check. No torch here: the configuration layer is the bottom of the import order.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from trainkit.config.schema import RecipeError, convert

VERSION_KEY = "format_version"


class FormatError(RecipeError):
    """A file that is not what its format says; the message is one line naming the file and the field."""


Upgrade = Callable[[dict, Path | str], dict]   # version N dict (and where it came from) -> version N + 1


@dataclass(frozen=True)
class Format:
    name: str                                # as errors name it: "summary.json"
    schema: type                             # the dataclass of the current version's fields
    upgrades: tuple[Upgrade, ...] = ()       # upgrades[i]: version i -> i + 1

    @property
    def version(self) -> int:
        return len(self.upgrades)


# ---- the fields of each format ----------------------------------------------------------------------------------
# Required fields (no default) are what readers rely on; the others default to None when an older writer left
# them out. dict / list / Any fields are free-form detail, checked only for their kind.

@dataclass(frozen=True)
class Summary:
    """A finished run: its chosen checkpoint evaluated on the report split (train.trainer.Trainer.summarize)."""
    run: str                                 # the run folder's name (version 0: taken from the folder)
    recipe_hash: str | None = None
    model: str | None = None
    epochs: int | None = None
    top1: float | None = None
    recipe: str | None = None                # the recipe file as the run named it ("" for a recipe from --resume)
    dataset: str | None = None
    params: int | None = None
    split: str | None = None
    checkpoint: str | None = None
    selected_on: str | None = None
    val_top1: float | None = None
    weights: str | None = None               # raw | ema: which weights were evaluated
    top5: float | None = None
    loss: float | None = None
    ece: float | None = None
    samples: int | None = None
    balanced_accuracy: float | None = None
    macro_f1: float | None = None
    per_class: dict | None = None
    train_class_counts: dict | None = None
    best_val: dict | None = None
    train_time_s: float | None = None
    compile_s: float | None = None
    img_per_s: float | None = None
    peak_mem_mb: float | None = None
    hardware: str | None = None
    world_size: int | None = None
    precision: str | None = None
    torch: str | None = None
    timm: str | None = None
    git_commit: str | None = None


@dataclass(frozen=True)
class PlanFile:
    """The derived values of a run (train.plan.Plan.to_dict); the Plan dataclass is the full list."""
    recipe_hash: str
    world_size: int
    precision: str
    global_batch: int
    per_device_batch: int
    accum_steps: int
    epochs: int
    steps_per_epoch: int
    device: str | None = None
    lr: float | None = None


@dataclass(frozen=True)
class MetricsRow:
    """One epoch of metrics.jsonl: the epoch and whatever the loop measured (train_loss, val_top1, lr, ...)."""
    epoch: int


@dataclass(frozen=True)
class Metrics:
    """evaluate.py's metrics.json (eval.pipeline.write_report)."""
    metrics: dict
    split: str | None = None
    classes: list[Any] | None = None
    weights: str | None = None


@dataclass(frozen=True)
class Trial:
    """A sweep trial's result (sweep.worker), read back by the study."""
    value: float | None
    best_epoch: int | None
    epochs_run: int
    train_time_s: float
    state: str = "complete"
    split: str = "val"
    metric: str | None = None
    epochs: int | None = None
    recipe_hash: str | None = None


@dataclass(frozen=True)
class FinalTest:
    """A sweep's test numbers after the search (eval: the best trial's checkpoint; retrain: base and best per
    seed); ``study`` is the study's state it was made from (best trial, trial count), so a later run of the
    sweep knows a stale one."""
    study: dict


@dataclass(frozen=True)
class Record:
    """A result record (report.records): what RESULTS.md, the zoo and the tables read."""
    recipe: str | None
    recipe_hash: str | None
    run: str | None = None
    dataset_id: str | None = None
    seed: Any = None
    variant: dict = field(default_factory=dict)
    variant_text: str | None = None
    variant_name: str | None = None
    top1: float | None = None
    precision: str | None = None
    hardware: str | None = None
    git_commit: str | None = None
    commit_problem: str | None = None        # set by --allow-dirty: why the commit is not a clean one in git log
    measured_at_commit_unreachable: str | None = None   # the commit a re-recorded run claimed (not in git log)
    recipe_values: dict | None = None        # what the recipe hash covers (config.recipe.hashed_values)
    command: str | None = None


@dataclass(frozen=True)
class Benchmark:
    """One section of benchmarks/results/ (benchmarks/run.py)."""
    section: str
    command: str
    machine: str
    measured: str
    git_commit: str
    repeats: int
    repeats_planned: int
    load_average: list[float]
    commands: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PhotosBenchmark:
    """benchmarks/results/finetune_photos.json (benchmarks/finetune_photos.py): one entry per measured part."""
    layout: dict | None = None
    recipe: dict | None = None
    probe: dict | None = None


@dataclass(frozen=True)
class PhotosRow:
    """One row of the photo table, benchmarks/results/photos/<row>[-s<seed>].json (benchmarks/photos_table.py)."""
    row: str
    top1: float
    epochs: int
    wall_s: float
    command: str
    split: str = "val"
    seed: int = 0
    hardware: str | None = None


@dataclass(frozen=True)
class TransferCell:
    """One cell of the aid-dev transfer study, benchmarks/results/transfer/<cell>.json (benchmarks/transfer_study.py):
    what was run and its whole-command wall time; the figures are in the result record it names."""
    cell: str
    method: str
    backbone: str
    resolution: str
    seed: int
    wall_s: float
    record: str
    command: str
    per_class: int | None = None
    date: str | None = None


# ---- upgrades (the one place old files are migrated) -------------------------------------------------------------

def _summary_v0(data: dict, where: Path | str) -> dict:
    # the first summaries did not record their run folder's name
    return {**data, "run": data.get("run") or Path(str(where)).parent.name}


def _record_v0(data: dict, where: Path | str) -> dict:
    # records before format_version said "schema": 1 (the only version there was)
    if data.get("schema") != 1:
        raise FormatError(f"{where}: not a result record (schema {data.get('schema')!r}, no {VERSION_KEY})")
    return {k: v for k, v in data.items() if k != "schema"}


def _same(data: dict, where: Path | str) -> dict:
    """Version 0 -> 1 for formats whose content did not change when versions began."""
    return data


SUMMARY = Format("summary.json", Summary, (_summary_v0,))
PLAN = Format("plan.json", PlanFile, (_same,))
METRICS_ROW = Format("metrics.jsonl", MetricsRow, (_same,))
METRICS = Format("metrics.json", Metrics, (_same,))
TRIAL = Format("trial.json", Trial, (_same,))
FINAL_TEST = Format("final_test.json", FinalTest, (_same,))
RECORD = Format("record", Record, (_record_v0,))
BENCHMARK = Format("benchmark results", Benchmark, (_same,))
PHOTOS_BENCHMARK = Format("photo fine-tuning benchmark results", PhotosBenchmark, (_same,))
PHOTOS_ROW = Format("photo table row", PhotosRow, (_same,))
TRANSFER_CELL = Format("transfer study cell", TransferCell, (_same,))
FORMATS = (SUMMARY, PLAN, METRICS_ROW, METRICS, TRIAL, FINAL_TEST, RECORD, BENCHMARK, PHOTOS_BENCHMARK, PHOTOS_ROW,
           TRANSFER_CELL)


# ---- checking, reading, writing ----------------------------------------------------------------------------------

def check(fmt: Format, data: Any, where: Path | str) -> dict:
    """``data`` (at the current version) checked against ``fmt``'s fields; FormatError names the field."""
    if not isinstance(data, dict):
        raise FormatError(f"{where}: not a JSON object ({fmt.name})")
    hints = typing.get_type_hints(fmt.schema)
    out = dict(data)
    for f in dataclasses.fields(fmt.schema):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FormatError(f"{where}: missing field {f.name!r} ({fmt.name}, format_version {fmt.version})")
            continue
        try:
            out[f.name] = _convert(data[f.name], hints[f.name], f.name)
        except RecipeError as err:
            raise FormatError(f"{where}: {err} ({fmt.name}, format_version {fmt.version})") from None
    return out


def _convert(value: Any, tp: Any, key: str) -> Any:
    """schema.convert, but a measured float may be NaN or infinite (a diverged loss is a fact to keep; a recipe
    value is refused)."""
    if isinstance(value, float) and not math.isfinite(value) and (tp is float or float in typing.get_args(tp)):
        return value
    return convert(value, tp, key)


def load(fmt: Format, data: Any, where: Path | str) -> dict:
    """A parsed file of format ``fmt`` brought to the current version and checked (see the module docstring)."""
    if not isinstance(data, dict):
        raise FormatError(f"{where}: not a JSON object ({fmt.name})")
    version = data.get(VERSION_KEY, 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise FormatError(f"{where}: {VERSION_KEY} must be a whole number, got {version!r} ({fmt.name})")
    if version > fmt.version:
        raise FormatError(f"{where}: {fmt.name} format_version {version} is newer than this trainkit reads "
                          f"({fmt.version}); update trainkit")
    data = {k: v for k, v in data.items() if k != VERSION_KEY}
    for upgrade in fmt.upgrades[version:]:
        data = upgrade(data, where)
    return check(fmt, {VERSION_KEY: fmt.version, **data}, where)


def _parse(text: str, where: Path | str, fmt: Format) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FormatError(f"{where}: unreadable {fmt.name}: not valid JSON ({err})") from None


def read(path: Path | str, fmt: Format) -> dict:
    """One JSON file of format ``fmt``, upgraded and checked; FormatError when unreadable."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise FormatError(f"{path}: unreadable {fmt.name} ({' '.join(str(err).split())})") from None
    return load(fmt, _parse(text, path, fmt), path)


def read_lines(path: Path | str, fmt: Format) -> list[dict]:
    """A JSON-lines file (one object of ``fmt`` per line; blank lines skipped), each upgraded and checked."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise FormatError(f"{path}: unreadable {fmt.name} ({' '.join(str(err).split())})") from None
    return [load(fmt, _parse(line, f"{path}:{i}", fmt), f"{path}:{i}")
            for i, line in enumerate(lines, 1) if line.strip()]


def dump(fmt: Format, data: dict, where: Path | str = "(being written)") -> dict:
    """``data`` stamped with the current ``format_version`` (first key) and checked: what a writer writes."""
    return check(fmt, {VERSION_KEY: fmt.version, **{k: v for k, v in data.items() if k != VERSION_KEY}}, where)


def dumps(fmt: Format, data: dict, *, indent: int | None = 2, where: Path | str = "(being written)") -> str:
    """The JSON text of :func:`dump` (one line with ``indent=None``, for JSON-lines), newline-terminated."""
    return json.dumps(dump(fmt, data, where), indent=indent, ensure_ascii=False) + "\n"


def write(path: Path | str, fmt: Format, data: dict) -> Path:
    path = Path(path)
    path.write_text(dumps(fmt, data, where=path))
    return path


__all__ = ["BENCHMARK", "FINAL_TEST", "FORMATS", "Format", "FormatError", "METRICS", "METRICS_ROW", "PHOTOS_BENCHMARK",
           "PHOTOS_ROW", "PLAN", "RECORD", "SUMMARY", "TRANSFER_CELL", "TRIAL", "VERSION_KEY", "check", "dump", "dumps",
           "load", "read", "read_lines", "write"]
