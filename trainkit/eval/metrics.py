"""Classification metrics: a streaming meter (top-1/5, loss, confusion, ECE) and its reports.

The meter keeps every statistic as a sum in one flat float64 CPU tensor, so a
distributed caller reduces it with a single ``all_reduce(SUM)`` and the result
does not depend on how samples were split between ranks or batches. Counts are
integers stored in float64, which is exact up to 2**53 samples.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import torch

from trainkit.report.charts import figure

TOPK = (1, 5)


class ClassificationMeter:
    """Accumulates top-1/top-5 hits, summed loss, a confusion matrix and ECE bin sums.

    Layout of :meth:`state` (all float64): ``[samples, top1_hits, top5_hits, loss_sum,
    confusion (C*C, row = true class), ece_count (B), ece_conf_sum (B), ece_hit_sum (B)]``.
    """

    def __init__(self, num_classes: int, ece_bins: int = 15):
        if num_classes < 1 or ece_bins < 1:
            raise ValueError(f"num_classes and ece_bins must be >= 1, got {num_classes} and {ece_bins}")
        self.num_classes, self.ece_bins = num_classes, ece_bins
        self._state = torch.zeros(self._size(), dtype=torch.float64)
        # upper bin edges computed as b/B exactly as a Python reference loop would: bins are (lo, hi]
        self._edges = torch.arange(1, ece_bins + 1, dtype=torch.float64) / ece_bins

    def _size(self) -> int:
        return 4 + self.num_classes ** 2 + 3 * self.ece_bins

    # ---- accumulation -------------------------------------------------------------------------------------

    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss_sum: float | torch.Tensor = 0.0) -> None:
        """Add one batch: ``logits`` [N, C] (any float dtype/device), ``targets`` [N] int, ``loss_sum`` summed loss."""
        logits, targets = self._check(logits, targets)
        if logits.shape[0] == 0:
            return
        logits = logits.detach().float()   # bf16/fp16 logits: softmax and top-k in float32
        targets = targets.to(logits.device)
        k = min(TOPK[1], self.num_classes)
        top = logits.topk(k, dim=1).indices
        pred = top[:, 0]   # top-1 taken from top-k, so a top-1 hit is always a top-5 hit, ties included
        in_topk = (top == targets[:, None]).any(dim=1)
        conf = torch.softmax(logits, dim=1).amax(dim=1)
        loss = loss_sum.detach().reshape(1) if torch.is_tensor(loss_sum) else torch.tensor([float(loss_sum)])
        # one device->host copy per batch; the binning below runs on CPU in float64, deterministic on any device
        packed = torch.cat([torch.stack([conf.double(), pred.double(), targets.double(), in_topk.double()]).flatten(),
                            loss.to(logits.device, torch.float64)]).cpu()
        n = logits.shape[0]
        conf, pred, tgt, hit5 = packed[:-1].view(4, n)
        self._accumulate(conf, pred.long(), tgt.long(), hit5, float(packed[-1]))

    def _check(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be [N, {self.num_classes}], got {list(logits.shape)}")
        if targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
            raise ValueError(f"targets must be [{logits.shape[0]}], got {list(targets.shape)}")
        if targets.is_floating_point():
            raise ValueError(f"targets must be integer class indices, got {targets.dtype}")
        return logits, targets

    def _accumulate(self, conf: torch.Tensor, pred: torch.Tensor, tgt: torch.Tensor, hit5: torch.Tensor,
                    loss: float) -> None:
        c, b = self.num_classes, self.ece_bins
        if tgt.min() < 0 or tgt.max() >= c:
            raise ValueError(f"targets must lie in [0, {c}), got values in [{int(tgt.min())}, {int(tgt.max())}]")
        hit1 = (pred == tgt).double()
        conf_bin = torch.bucketize(conf, self._edges).clamp_(0, b - 1)
        s = self._state
        s[0] += len(tgt)
        s[1] += hit1.sum()
        s[2] += hit5.sum()
        s[3] += loss
        # index_add_ touches N cells, where a bincount over C*C would cost a million adds at 1000 classes
        s[4:4 + c * c].index_add_(0, tgt * c + pred, torch.ones_like(conf))
        ece = s[4 + c * c:].view(3, b)
        ece[0] += torch.bincount(conf_bin, minlength=b).double()
        ece[1].index_add_(0, conf_bin, conf)
        ece[2].index_add_(0, conf_bin, hit1)

    # ---- distributed state --------------------------------------------------------------------------------

    def state(self, device: torch.device | str | None = None) -> torch.Tensor:
        """A copy of all sums as one flat float64 tensor (on ``device``: NCCL needs it on the GPU)."""
        return self._state.clone() if device is None else self._state.to(device, copy=True)

    def load_state(self, t: torch.Tensor) -> None:
        """Replace the sums with ``t`` (e.g. the all-reduced :meth:`state`)."""
        self._state = self._validated(t).clone()

    def merge_state(self, t: torch.Tensor) -> None:
        """Add the sums in ``t`` (another meter's :meth:`state`) to this meter's."""
        self._state += self._validated(t)

    def _validated(self, t: torch.Tensor) -> torch.Tensor:
        if t.ndim != 1 or t.numel() != self._size():
            raise ValueError(f"state for {self.num_classes} classes / {self.ece_bins} bins has {self._size()} "
                             f"values, got shape {list(t.shape)}")
        return t.detach().to("cpu", torch.float64)

    @classmethod
    def from_state(cls, num_classes: int, t: torch.Tensor, ece_bins: int = 15) -> ClassificationMeter:
        """A meter holding the sums in ``t``."""
        meter = cls(num_classes, ece_bins)
        meter.load_state(t)
        return meter

    # ---- results ------------------------------------------------------------------------------------------

    @property
    def samples(self) -> int:
        return int(self._state[0])

    def confusion(self) -> torch.Tensor:
        """The C x C int64 confusion matrix (rows = true class, columns = predicted)."""
        c = self.num_classes
        return self._state[4:4 + c * c].view(c, c).round().long()

    def ece(self) -> float:
        """Expected calibration error (fraction) over equal-width confidence bins."""
        n = self.samples
        if n == 0:
            return math.nan
        _, conf, hit = self._state[4 + self.num_classes ** 2:].view(3, self.ece_bins)
        return float((conf - hit).abs().sum()) / n

    def compute(self) -> dict:
        """samples, top1/top5 (%), mean loss, ece (fraction), balanced accuracy and macro-F1 (%), per-class
        accuracy (= recall), precision and F1 (%, None where undefined), confusion."""
        n = self.samples
        hits1, hits5 = int(round(float(self._state[1]))), int(round(float(self._state[2])))
        confusion = self.confusion()
        # percentages from integer counts in Python floats: identical predictions give bit-identical figures
        return {
            "samples": n,
            "top1": 100 * hits1 / n if n else math.nan,
            "top5": 100 * hits5 / n if n else math.nan,
            "loss": float(self._state[3]) / n if n else math.nan,
            "ece": self.ece(),
            **imbalance_metrics(confusion.tolist()),
            "per_class_accuracy": per_class_accuracy(confusion.tolist()),
            "confusion": confusion.tolist(),
        }


def per_class_accuracy(confusion: Sequence[Sequence[int]]) -> list[float | None]:
    """Diagonal over row sum, in percent; None for classes without samples (keeps JSON free of NaN)."""
    return [100 * row[i] / sum(row) if sum(row) else None for i, row in enumerate(confusion)]


def imbalance_metrics(confusion: Sequence[Sequence[int]]) -> dict:
    """Per-class precision, recall and F1, their macro means, in percent, from a confusion matrix
    (rows = true class). Conventions, as scikit-learn's defaults with ``zero_division=0``:

    * recall of a class without samples and precision of a class never predicted are None
      (undefined; JSON stays free of NaN); F1 is 0 when the class has no true positive;
    * ``balanced_accuracy`` is the mean recall over the classes that have samples;
    * ``macro_f1`` is the mean F1 over the classes that have samples or predictions.
    """
    c = len(confusion)
    support = [sum(row) for row in confusion]
    predicted = [sum(confusion[i][j] for i in range(c)) for j in range(c)]
    tp = [confusion[i][i] for i in range(c)]
    recall = [100 * tp[i] / support[i] if support[i] else None for i in range(c)]
    precision = [100 * tp[i] / predicted[i] if predicted[i] else None for i in range(c)]
    # 2 tp / (2 tp + fp + fn) is the harmonic mean of precision and recall, defined whenever either is
    f1 = [200 * tp[i] / (support[i] + predicted[i]) if support[i] + predicted[i] else None for i in range(c)]
    present = [r for r in recall if r is not None]
    scored = [f for f in f1 if f is not None]
    return {
        "balanced_accuracy": sum(present) / len(present) if present else math.nan,
        "macro_f1": sum(scored) / len(scored) if scored else math.nan,
        "per_class_precision": precision,
        "per_class_recall": recall,
        "per_class_f1": f1,
    }


def format_metrics(d: dict) -> str:
    """One line: ``top1 91.23%  top5 99.87%  bal_acc 90.11%  macro_f1 90.02%  loss 0.2512  ece 0.0123  (10000
    samples)``; absent keys are left out."""
    parts = []
    for key, fmt in (("top1", "{:.2f}%"), ("top5", "{:.2f}%"), ("balanced_accuracy", "{:.2f}%"),
                     ("macro_f1", "{:.2f}%"), ("loss", "{:.4f}"), ("ece", "{:.4f}")):
        if d.get(key) is not None:
            parts.append(f"{SHORT.get(key, key)} {fmt.format(d[key])}")
    if d.get("samples") is not None:
        parts.append(f"({d['samples']} samples)")
    return "  ".join(parts)


SHORT = {"balanced_accuracy": "bal_acc"}


# ---- confusion-matrix files ----------------------------------------------------------------------------------

def write_confusion_csv(path: str | Path, confusion: Sequence[Sequence[int]], class_names: Sequence[str]) -> None:
    """CSV with a header of predicted classes and one row per true class."""
    _check_names(confusion, class_names)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *class_names])
        for name, row in zip(class_names, confusion):
            writer.writerow([name, *(int(v) for v in row)])


def write_confusion_png(path: str | Path, confusion: Sequence[Sequence[int]], class_names: Sequence[str],
                        title: str = "") -> None:
    """Heat map coloured by row-normalised fraction, counts written in cells when there are <= 20 classes."""
    _check_names(confusion, class_names)
    counts = torch.as_tensor(confusion, dtype=torch.float64).reshape(len(class_names), len(class_names))
    c = counts.shape[0]
    rows = counts.sum(dim=1, keepdim=True)
    frac = torch.where(rows > 0, counts / rows.clamp(min=1), torch.zeros_like(counts)).numpy()
    side = min(4.0 + 0.4 * c, 30.0)   # grows with C, capped so 1000 classes still renders in sane memory
    fig = figure(side + 1.5, side, dpi=None, layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="fraction of true class")
    _label_axes(ax, class_names, side)
    if c <= 20:
        _annotate(ax, counts, frac)
    ax.set_title(title)
    fig.savefig(path, dpi=100)


def _label_axes(ax, class_names: Sequence[str], side: float) -> None:
    c = len(class_names)
    step = max(1, math.ceil(c / 100))   # past ~100 classes label every step-th so the names do not overlap
    ticks = list(range(0, c, step))
    names = [_short(class_names[i]) for i in ticks]
    size = max(4.0, min(10.0, 72 * side / max(1, len(ticks)) * 0.6))
    ax.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor", fontsize=size)
    ax.set_yticks(ticks, names, fontsize=size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")


def _annotate(ax, counts: torch.Tensor, frac) -> None:
    c = counts.shape[0]
    size = max(5.0, 11.0 - 0.3 * c)
    for i in range(c):
        for j in range(c):
            colour = "white" if frac[i, j] > 0.5 else "black"   # stay legible on dark cells
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", color=colour, fontsize=size)


def _short(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "\u2026"


def _check_names(confusion: Sequence[Sequence[int]], class_names: Sequence[str]) -> None:
    if len(confusion) != len(class_names) or any(len(row) != len(class_names) for row in confusion):
        raise ValueError(f"confusion must be {len(class_names)} x {len(class_names)} to match the class names")


__all__ = ["ClassificationMeter", "format_metrics", "imbalance_metrics", "per_class_accuracy", "write_confusion_csv",
           "write_confusion_png"]
