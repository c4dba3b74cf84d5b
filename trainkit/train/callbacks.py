"""Run-folder writers: TensorBoard + CSV/JSON metrics, and last/best checkpoints."""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
from pathlib import Path

import torch

try:
    import resource   # POSIX only: peak resident memory
except ImportError:
    resource = None

from trainkit.config import formats
from trainkit.runtime.checkpoint import save_atomic

log = logging.getLogger(__name__)


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory (CUDA) or peak resident memory of this process (CPU), MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if resource is None:
        return float("nan")
    try:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    except OSError:
        return float("nan")


class StopTraining(Exception):
    """Raised by a ``Trainer.epoch_end`` callback: fit() ends after the epoch just saved (its
    checkpoints and metrics are written), e.g. a sweep trial the pruner stopped. The message says why."""


class RunLogger:
    """Writes TensorBoard events and one JSON line + one CSV row per epoch (rank 0 only)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.run_dir, self.enabled, self._tb = run_dir, enabled, None
        if enabled:
            # optional heavy dependency: tensorboard takes seconds to import, only rank 0 writes events
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(log_dir=str(run_dir / "tb"))

    def step(self, step: int, loss: float, lr: float) -> None:
        if self._tb is not None:
            self._tb.add_scalar("train/loss_step", loss, step)
            self._tb.add_scalar("train/lr", lr, step)

    def epoch(self, row: dict) -> None:
        if not self.enabled:
            return
        epoch = row["epoch"]
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                group, _, name = key.partition("_")
                self._tb.add_scalar(f"{group}/{name}" if name else key, value, epoch)
        self._tb.flush()
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(formats.dumps(formats.METRICS_ROW, row, indent=None))
        path = self.run_dir / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def hparams(self, recipe: dict, metrics: dict) -> None:
        """The run's recipe values and final metrics in TensorBoard's HParams tab (one row per run; point
        TensorBoard at a sweep's trials/ folder to compare every trial there)."""
        if self._tb is None:
            return
        finals = {f"hparam/{k}": float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        # run_name ".": the hparams go into this run's own event folder, not a timestamped sub-folder
        self._tb.add_hparams(flat_hparams(recipe), finals, run_name=".")
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def flat_hparams(tree: dict, prefix: str = "") -> dict:
    """A nested recipe as dotted keys with the values TensorBoard's hparams accept (numbers, strings, bools);
    lists and None become their text so every key of the recipe is there to filter on."""
    flat: dict = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class Checkpointer:
    """Keeps ``last.pt`` every epoch and ``best.pt`` when the chosen metric improves.

    ``select=False`` (val is the test split): no best.pt, nothing is chosen on val. ``keep_epochs``:
    every epoch's checkpoint also stays as ``epoch_NNN.pt`` (a hard link to that epoch's last.pt, so no
    second write), e.g. to measure each epoch's test top-1 after the run."""

    def __init__(self, run_dir: Path, metric: str, enabled: bool, select: bool = True, keep_epochs: bool = False):
        self.run_dir, self.metric, self.enabled, self.select = run_dir, metric, enabled, select
        self.keep_epochs = keep_epochs
        self.best_value: float | None = None
        self.best_epoch: int | None = None

    def improved(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value < self.best_value if self.metric.endswith("loss") else value > self.best_value

    def save(self, state: dict, val_metrics: dict | None) -> bool:
        """Write last.pt (and best.pt); return True when this epoch is the new best."""
        is_best = False
        if val_metrics is not None and self.select:
            value = val_metrics[self.metric]
            is_best = math.isfinite(value) and self.improved(value)
            if is_best:
                self.best_value, self.best_epoch = value, state["epoch"]
        state["best"] = {"metric": self.metric, "value": self.best_value, "epoch": self.best_epoch}
        saved = self.save_last(state)
        if saved and is_best:
            save_atomic(state, self.run_dir / "best.pt")
        if saved and self.keep_epochs:
            keep = self.run_dir / f"epoch_{state['epoch']:03d}.pt"
            keep.unlink(missing_ok=True)   # a resumed run redoing this epoch
            try:
                os.link(self.run_dir / "last.pt", keep)
            except OSError:   # a file system without hard links
                shutil.copy2(self.run_dir / "last.pt", keep)
        return is_best

    def save_last(self, state: dict) -> bool:
        """Write last.pt, keeping the one it replaces as prev.pt; False (nothing written) on
        non-main ranks and for non-finite weights, which must never replace good ones."""
        if not self.enabled:
            return False
        bad = [k for k, v in state["model"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            log.error("not saving a checkpoint: non-finite values in %s; the last good one is kept", bad[0])
            return False
        state.setdefault("best", {"metric": self.metric, "value": self.best_value, "epoch": self.best_epoch})
        last, fresh = self.run_dir / "last.pt", self.run_dir / "next.pt"
        save_atomic(state, fresh)       # complete and valid before the old one moves aside
        if last.exists():
            os.replace(last, self.run_dir / "prev.pt")
        os.replace(fresh, last)
        return True

    def load_state(self, best: dict | None) -> None:
        if best:
            self.best_value, self.best_epoch = best.get("value"), best.get("epoch")
