"""Comparison charts of finished runs (matplotlib, no torch), one file per data set and split.

Inputs are table rows (:func:`trainkit.report.table.collect`, optionally annotated and grouped by
:mod:`trainkit.report.records`). Every row gets the number it has in the Markdown table, a colour and
a marker of its own; points carry only that number and a legend beside the axes spells it out, so
labels never print over each other whatever the number of runs.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from trainkit.config import formats
from trainkit.report.records import variant_text
from trainkit.report.table import is_number, by_dataset, format_variant

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")   # matplotlib's tab10
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def style(number: int) -> dict:
    """Colour and marker of table row ``number`` (1-based): 80 distinct pairs, neighbours differ in both."""
    i = number - 1
    return {"color": COLOURS[i % len(COLOURS)], "marker": MARKERS[(i + i // len(COLOURS)) % len(MARKERS)]}


def common_variant(rows: list[dict]) -> dict:
    """The variant keys every row of a chart shares (said once, in the legend title), {} when any row's is unknown."""
    variants = [r.get("variant") for r in rows]
    if not variants or any(v is None for v in variants):
        return {}
    return {k: v for k, v in variants[0].items() if all(k in o and o[k] == v for o in variants[1:])}


def legend_label(row: dict, common: dict | None = None, width: int = 48) -> str:
    """``3. quickstart: optim.lr=0.05 (n=2)``, without the keys in ``common``, wrapped to ``width`` characters."""
    recipe = Path(str(row.get("recipe") or "?")).stem
    if common and row.get("variant") is not None:
        variant = variant_text({k: v for k, v in row["variant"].items() if k not in common})
    else:
        variant = format_variant(row)
        variant = "" if variant == "-" else variant
    text = f"{row['number']}. {recipe}" + (f": {variant}" if variant else "")
    if (row.get("n") or 1) > 1:
        text += f" (n={row['n']})"
    return _wrap(text, width)


def legend_title(common: dict, width: int = 48) -> str | None:
    return _wrap(f"every run here: {variant_text(common)}", width) if common else None


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width, subsequent_indent="    ", break_on_hyphens=False))


def dataset_title(name: str) -> str:
    """``Fashion-MNIST (Debian package, /usr/...)`` -> ``Fashion-MNIST``; ``ImageFolder /x/cifar10-jpeg`` ->
    ``cifar10-jpeg (ImageFolder)``: the table's heading keeps the full description."""
    head = name.split(" (", 1)[0]
    if head.startswith("ImageFolder "):
        return f"{Path(head.removeprefix('ImageFolder ').rstrip('/')).name} (ImageFolder)"
    return head


def dataset_slug(name: str) -> str:
    """A short file-name part for a data set: ``Fashion-MNIST (Debian ...)`` -> ``fashion-mnist``,
    ``ImageFolder /x/cifar10-jpeg`` -> ``cifar10-jpeg``."""
    return re.sub(r"[^a-z0-9]+", "-", dataset_title(name).removesuffix(" (ImageFolder)").lower()).strip("-") \
        or "dataset"


def figure(width_in: float, height_in: float, dpi: float | None = 110, **kwargs):
    """A matplotlib Figure on an Agg canvas: the object API, no pyplot global state, no display needed."""
    # optional heavy dependency: matplotlib takes a second to import and only charts need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=dpi, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _finish(fig, axes, path: Path, legend_title: str | None = None) -> Path:
    handles, labels = axes[-1].get_legend_handles_labels()
    if handles:   # beside the axes, never over the points
        fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.98), fontsize=7, frameon=False,
                   borderaxespad=0.5, title=legend_title, title_fontsize=7, alignment="left")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def accuracy_vs_time_png(rows: list[dict], path: Path, *, dataset: str, split: str) -> Path:
    """Top-1 on ``split`` (%) against training time (minutes): one numbered point per row, the seed
    standard deviation as an error bar for grouped rows."""
    fig = figure(6.5, 4.2)
    ax = fig.add_subplot()
    common = common_variant(rows)
    for row in rows:
        if not (is_number(row.get("top1")) and is_number(row.get("train_time_s"))):
            continue
        x, y, st = row["train_time_s"] / 60, row["top1"], style(row["number"])
        err = row.get("top1_std") if is_number(row.get("top1_std")) else None
        ax.errorbar([x], [y], yerr=None if err is None else [err], color=st["color"], marker=st["marker"],
                    markersize=7, linestyle="none", capsize=3, label=legend_label(row, common))
        ax.annotate(str(row["number"]), (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8,
                    color=st["color"])
    ax.set(xlabel="training time (min)", ylabel=f"{split} top-1 (%)",
           title=f"{dataset_title(dataset)}: {split} top-1 vs training time")
    ax.margins(x=0.15, y=0.15)
    return _finish(fig, [ax], path, legend_title(common))


def read_curves(run_dir: Path) -> list[dict]:
    """The per-epoch rows of a run's ``metrics.jsonl`` (empty when missing or unreadable)."""
    try:
        return formats.read_lines(run_dir / "metrics.jsonl", formats.METRICS_ROW)
    except formats.FormatError:   # a chart without curves, rather than no charts
        return []


def curves_png(rows: list[dict], path: Path, *, dataset: str) -> Path:
    """Train loss and val top-1 per epoch; every run of a row (its seeds) in the row's colour and marker."""
    fig = figure(10, 4.0)
    loss_ax, acc_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    common = common_variant(rows)
    for row in rows:
        st = style(row["number"])
        folders = row.get("paths") or [row.get("path")]
        for k, folder in enumerate(f for f in folders if f):
            epochs = read_curves(Path(folder))
            label = legend_label(row, common) if k == 0 else None
            loss = [e for e in epochs if is_number(e.get("train_loss"))]
            loss_ax.plot([e["epoch"] for e in loss], [e["train_loss"] for e in loss], color=st["color"],
                         marker=st["marker"], markersize=4, linewidth=1.2, alpha=0.85)
            val = [e for e in epochs if is_number(e.get("val_top1"))]
            acc_ax.plot([e["epoch"] for e in val], [e["val_top1"] for e in val], color=st["color"],
                        marker=st["marker"], markersize=4, linewidth=1.2, alpha=0.85, label=label)
    from matplotlib.ticker import MaxNLocator  # optional heavy dependency (see figure)

    loss_ax.set(xlabel="epoch", ylabel="train loss", title=f"{dataset_title(dataset)}: training loss")
    acc_ax.set(xlabel="epoch", ylabel="val top-1 (%)", title="val split top-1 per epoch")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, [loss_ax, acc_ax], path, legend_title(common))


def write_charts(rows: list[dict], out_dir: Path, sort_by: str = "top1") -> list[Path]:
    """``accuracy_vs_time-<data set>.png`` per data set (``-<split>`` added where a data set's rows were
    evaluated on different splits) and ``curves-<data set>.png``; row numbers as in the Markdown table."""
    written, used = [], set()
    for dataset, section in by_dataset(rows, sort_by).items():
        slug, k = dataset_slug(dataset), 2
        while slug in used:   # two data sets with the same short name
            slug, k = f"{dataset_slug(dataset)}-{k}", k + 1
        used.add(slug)
        splits = sorted({_split(r) for r in section})
        for split in splits:
            name = slug if len(splits) == 1 else f"{slug}-{split}"
            written.append(accuracy_vs_time_png([r for r in section if _split(r) == split],
                                                out_dir / f"accuracy_vs_time-{name}.png", dataset=dataset,
                                                split=split))
        written.append(curves_png(section, out_dir / f"curves-{slug}.png", dataset=dataset))
    return written


def _split(row: dict) -> str:
    return str(row.get("split") or "test")
