"""Comparison tables of finished runs, built from each run folder's ``summary.json``.

Kept free of torch imports so ``compare.py`` starts instantly on a laptop that
only holds copied run folders.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from trainkit.config import formats

SUMMARY = "summary.json"
MISSING = "-"

# numbers where smaller ranks first; other numbers sort descending (higher is better), text alphabetically
ASCENDING = frozenset({"loss", "ece", "train_time_s", "peak_mem_mb", "params", "epochs"})

CSV_COLUMNS = ("number", "run", "dataset", "recipe", "variant_text", "seed", "n", "runs", "seeds", "recipe_hash",
               "model", "params", "epochs", "split", "selected_on", "top1", "top1_std", "top5", "balanced_accuracy",
               "macro_f1", "loss", "ece", "samples", "train_time_s", "img_per_s", "peak_mem_mb", "hardware",
               "precision", "world_size", "torch", "timm", "git_commit", "path")


class TableError(ValueError):
    """A user-facing problem (missing path, nothing found); one line."""


# ---- collecting ----------------------------------------------------------------------------------------------

def collect(paths: Iterable[str | Path], warn: Callable[[str], None] | None = None) -> list[dict]:
    """Load ``summary.json`` of each run folder; folders without one are searched recursively.

    Unreadable summaries are skipped with a warning line naming the file (printed to
    stderr unless ``warn`` is given). Raises :class:`TableError` for a path that does
    not exist or when no summary is found at all.
    """
    warn = warn or _warn_stderr
    rows, seen = [], set()
    for path in map(Path, paths):
        for file in find_summaries(path):
            key = file.resolve()
            if key in seen:   # a run folder given together with its parent counts once
                continue
            seen.add(key)
            row = read_summary(file, warn)
            if row is not None:
                rows.append(row)
    if not rows:
        raise TableError(f"no readable {SUMMARY} found under {', '.join(str(p) for p in paths)}")
    return rows


def find_summaries(path: Path) -> list[Path]:
    """``path`` itself (a summary file), ``path/summary.json``, or every summary below ``path``, sorted."""
    if not path.exists():
        raise TableError(f"{path} does not exist")
    if path.is_file():
        return [path]
    if (path / SUMMARY).is_file():
        return [path / SUMMARY]
    return sorted(path.rglob(SUMMARY))


def read_summary(file: Path, warn: Callable[[str], None]) -> dict | None:
    """The summary as a dict with ``path`` (its folder) added; None (after a warning) if unreadable."""
    try:
        data = formats.read(file, formats.SUMMARY)   # older versions upgraded (the run's name from its folder)
    except formats.FormatError as err:
        warn(f"warning: skipping {' '.join(str(err).split())}")
        return None
    data["path"] = str(file.parent)
    return data


def _warn_stderr(message: str) -> None:
    print(message, file=sys.stderr)


# ---- ordering ------------------------------------------------------------------------------------------------

def sort_rows(rows: list[dict], sort_by: str = "top1") -> list[dict]:
    """Grouped by dataset (alphabetical), then by ``sort_by`` (best first); runs missing the key go last."""
    def key(row: dict) -> tuple:
        value = row.get(sort_by)
        # (kind, value): numbers, then text, then missing, so mixed types never get compared with each other
        if is_number(value):
            rank: tuple = (0, float(value) if sort_by in ASCENDING else -float(value))
        elif isinstance(value, str) and value:
            rank = (1, value)   # text (model, recipe...) reads best alphabetically
        else:
            rank = (2, 0)
        return (_dataset(row), rank, str(row.get("run", "")))
    return sorted(rows, key=key)


def _dataset(row: dict) -> str:
    return str(row.get("dataset") or "(unknown dataset)")


# ---- formatting ----------------------------------------------------------------------------------------------

def format_params(n: Any) -> str:
    """Parameter count in millions: ``0.27M``."""
    return f"{n / 1e6:.2f}M" if is_number(n) else MISSING


def format_duration(seconds: Any) -> str:
    """``45s``, ``3m12s`` or ``2h05m``."""
    if not is_number(seconds):
        return MISSING
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fixed_digits(digits: int) -> Callable[[Any], str]:
    return lambda v: f"{v:.{digits}f}" if is_number(v) else MISSING


def _text(v: Any) -> str:
    return MISSING if v is None or v == "" else str(v)


def format_mean_std(row: dict, key: str, digits: int = 2) -> str:
    """``91.23`` for one run, ``91.23 ± 0.15`` for a group of runs (sample std, from ``<key>_std``)."""
    value, std = row.get(key), row.get(f"{key}_std")
    if not is_number(value):
        return MISSING
    return f"{value:.{digits}f} ± {std:.{digits}f}" if is_number(std) else f"{value:.{digits}f}"


def format_split(row: dict) -> str:
    """The split the metrics are on, with a note when the summary says the checkpoint was not chosen on a
    separate val split (``selected_on``: ``last`` epoch, or the reported split itself)."""
    split, chosen = row.get("split"), row.get("selected_on")
    if not split:
        return MISSING
    if chosen == "last":
        return f"{split} (last epoch)"
    return f"{split} (also chose the checkpoint)" if chosen == split else str(split)


def format_variant(row: dict) -> str:
    """What sets the row apart from its recipe file; ``as recipe`` when nothing does; ``-`` when unknown
    (a summary without its run folder's recipe.yaml)."""
    if row.get("variant_text") is None:
        return MISSING
    return row["variant_text"] or "as recipe"


def _key(key: str, fmt: Callable[[Any], str]) -> Callable[[dict], str]:
    return lambda row: fmt(row.get(key))


# (header, cell of a row) of the Markdown table; "#" numbers rows within a data set, as the charts do
MD_COLUMNS: tuple[tuple[str, Callable[[dict], str]], ...] = (
    ("#", _key("number", _text)), ("recipe", _key("recipe", _text)), ("variant", format_variant),
    ("model", _key("model", _text)), ("params", _key("params", format_params)), ("epochs", _key("epochs", _text)),
    ("split", format_split), ("n", _key("n", _text)), ("top-1", lambda row: format_mean_std(row, "top1")),
    ("top-5", _key("top5", fixed_digits(2))), ("bal. acc", _key("balanced_accuracy", fixed_digits(2))),
    ("macro-F1", _key("macro_f1", fixed_digits(2))), ("train time", _key("train_time_s", format_duration)),
    ("img/s", _key("img_per_s", fixed_digits(0))),
)
RIGHT_ALIGNED = frozenset({"#", "params", "epochs", "n", "top-1", "top-5", "bal. acc", "macro-F1", "train time",
                           "img/s"})


def by_dataset(rows: list[dict], sort_by: str = "top1") -> dict[str, list[dict]]:
    """Rows per data set (alphabetical), best first, each numbered (``number``: 1, 2, ... within its data set)."""
    sections: dict[str, list[dict]] = {}
    for row in sort_rows(rows, sort_by):
        section = sections.setdefault(_dataset(row), [])
        section.append({**row, "number": len(section) + 1})
    return sections


def to_markdown(rows: list[dict], sort_by: str = "top1") -> str:
    """One Markdown table per dataset (``### dataset`` heading), rows sorted by ``sort_by`` best first."""
    sections = []
    for dataset, section in by_dataset(rows, sort_by).items():
        lines = [f"### {dataset}", "", *_header()]
        lines += [_md_row(cell(row) for _, cell in MD_COLUMNS) for row in section]
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def _header() -> list[str]:
    names = [name for name, _ in MD_COLUMNS]
    rule = ["---:" if name in RIGHT_ALIGNED else "---" for name in names]
    return [_md_row(names), _md_row(rule)]


def _md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"   # a '|' in a name would split the cell


def to_csv(rows: list[dict], path: str | Path, sort_by: str = "top1") -> None:
    """Raw values (no formatting), same order and numbers as :func:`to_markdown`; missing values are empty
    cells, lists (a group's runs and seeds) space-separated."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for section in by_dataset(rows, sort_by).values():
            for row in section:
                writer.writerow([_csv_cell(row.get(c)) for c in CSV_COLUMNS])


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def write_tables(rows: list[dict], out_dir: str | Path, sort_by: str = "top1") -> tuple[Path, Path]:
    """``table.md`` and ``table.csv`` in ``out_dir`` (created); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / "table.md", out / "table.csv"
    md.write_text(to_markdown(rows, sort_by))
    to_csv(rows, csv_path, sort_by)
    return md, csv_path


def is_number(v: Any) -> bool:
    # bool is an int subclass but never a metric; NaN/inf (json allows them) would print as 'nan'
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


__all__ = [
    "CSV_COLUMNS",
    "TableError",
    "by_dataset",
    "collect",
    "find_summaries",
    "format_duration",
    "format_mean_std",
    "format_params",
    "format_split",
    "read_summary",
    "sort_rows",
    "to_csv",
    "to_markdown",
    "write_tables",
]
