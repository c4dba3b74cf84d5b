"""Comparison tables of finished runs, built from each run folder's ``summary.json``.

Kept free of torch imports so ``compare.py`` starts instantly on a laptop that
only holds copied run folders.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

SUMMARY = "summary.json"
MISSING = "-"

# numbers where smaller ranks first; other numbers sort descending (higher is better), text alphabetically
ASCENDING = frozenset({"loss", "ece", "train_time_s", "peak_mem_mb", "params", "epochs"})

CSV_COLUMNS = ("run", "dataset", "recipe", "recipe_hash", "model", "params", "epochs", "split", "selected_on", "top1", "top5",
               "balanced_accuracy", "macro_f1", "loss", "ece", "samples", "train_time_s", "img_per_s", "peak_mem_mb", "hardware", "precision",
               "world_size", "torch", "timm", "git_commit", "path")


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
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        warn(f"warning: skipping {file}: {' '.join(str(err).split())}")
        return None
    if not isinstance(data, dict):
        warn(f"warning: skipping {file}: not a JSON object")
        return None
    data.setdefault("run", file.parent.name)   # older runs did not record their folder name
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
        if _is_number(value):
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
    return f"{n / 1e6:.2f}M" if _is_number(n) else MISSING


def format_duration(seconds: Any) -> str:
    """``45s``, ``3m12s`` or ``2h05m``."""
    if not _is_number(seconds):
        return MISSING
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _fixed(digits: int) -> Callable[[Any], str]:
    return lambda v: f"{v:.{digits}f}" if _is_number(v) else MISSING


def _text(v: Any) -> str:
    return MISSING if v is None or v == "" else str(v)


# (header, summary key, formatter) of the Markdown table
MD_COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("recipe", "recipe", _text), ("model", "model", _text), ("params", "params", format_params),
    ("epochs", "epochs", _text), ("split", "split", _text), ("top-1", "top1", _fixed(2)),
    ("top-5", "top5", _fixed(2)), ("bal. acc", "balanced_accuracy", _fixed(2)), ("macro-F1", "macro_f1", _fixed(2)),
    ("train time", "train_time_s", format_duration), ("img/s", "img_per_s", _fixed(0)),
)
RIGHT_ALIGNED = frozenset({"params", "epochs", "top-1", "top-5", "bal. acc", "macro-F1", "train time", "img/s"})


def to_markdown(rows: list[dict], sort_by: str = "top1") -> str:
    """One Markdown table per dataset (``### dataset`` heading), rows sorted by ``sort_by`` best first."""
    sections, current, lines = [], None, []
    for row in sort_rows(rows, sort_by):
        if _dataset(row) != current:
            if lines:
                sections.append("\n".join(lines))
            current, lines = _dataset(row), [f"### {_dataset(row)}", "", *_header()]
        lines.append(_md_row(fmt(row.get(key)) for _, key, fmt in MD_COLUMNS))
    sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def _header() -> list[str]:
    names = [name for name, _, _ in MD_COLUMNS]
    rule = ["---:" if name in RIGHT_ALIGNED else "---" for name in names]
    return [_md_row(names), _md_row(rule)]


def _md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"   # a '|' in a name would split the cell


def to_csv(rows: list[dict], path: str | Path, sort_by: str = "top1") -> None:
    """Raw values (no formatting), same order as :func:`to_markdown`; missing values are empty cells."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for row in sort_rows(rows, sort_by):
            writer.writerow(["" if row.get(c) is None else row[c] for c in CSV_COLUMNS])


def write_tables(rows: list[dict], out_dir: str | Path, sort_by: str = "top1") -> tuple[Path, Path]:
    """``table.md`` and ``table.csv`` in ``out_dir`` (created); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / "table.md", out / "table.csv"
    md.write_text(to_markdown(rows, sort_by))
    to_csv(rows, csv_path, sort_by)
    return md, csv_path


def _is_number(v: Any) -> bool:
    # bool is an int subclass but never a metric; NaN/inf (json allows them) would print as 'nan'
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


__all__ = ["collect", "find_summaries", "read_summary", "sort_rows", "to_markdown", "to_csv", "write_tables",
           "format_params", "format_duration", "TableError", "CSV_COLUMNS"]
