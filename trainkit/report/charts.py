"""Comparison charts of finished runs (matplotlib, no torch): accuracy vs training time, and the
training curves of several runs side by side. Inputs are the rows of :func:`trainkit.report.table.collect`."""

from __future__ import annotations

import json
from pathlib import Path

from trainkit.report.table import _is_number


def _figure(width_in: float, height_in: float):
    # the object API with the Agg canvas: no pyplot global state, works without a display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def accuracy_vs_time_png(rows: list[dict], path: Path) -> Path:
    """Test top-1 (%) against training time (minutes), one point per run, labelled with its name."""
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    for row in rows:
        if _is_number(row.get("top1")) and _is_number(row.get("train_time_s")):
            ax.scatter(row["train_time_s"] / 60, row["top1"], s=30)
            ax.annotate(str(row.get("run", "?")), (row["train_time_s"] / 60, row["top1"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.set(xlabel="training time (min)", ylabel="test top-1 (%)", title="accuracy vs training time")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def read_curves(run_dir: Path) -> list[dict]:
    """The per-epoch rows of a run's ``metrics.jsonl`` (empty when missing or unreadable)."""
    try:
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):
        return []


def curves_png(rows: list[dict], path: Path) -> Path:
    """Train loss and validation top-1 per epoch, one line per run."""
    fig = _figure(11, 4.2)
    loss_ax, acc_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for row in rows:
        epochs = read_curves(Path(row["path"]))
        label = str(row.get("run", "?"))
        loss_ax.plot([e["epoch"] for e in epochs], [e.get("train_loss") for e in epochs], marker=".", label=label)
        val = [e for e in epochs if _is_number(e.get("val_top1"))]
        acc_ax.plot([e["epoch"] for e in val], [e["val_top1"] for e in val], marker=".", label=label)
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="training loss")
    acc_ax.set(xlabel="epoch", ylabel="val top-1 (%)", title="validation top-1")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path
