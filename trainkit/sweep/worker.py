"""One sweep trial in its own process: ``python -m trainkit.sweep.worker RECIPE key=value ... --report-fd N``.

A separate process per trial (rather than a thread of the sweep) because a trial then owns its
torch thread count and device, a crash or an out-of-memory kill takes one trial and not the study,
and killing the sweep kills its trials with it (PR_SET_PDEATHSIG), so a restarted sweep never
races an orphan still writing into a run folder.

The run is set up by trainkit.train.session.RunSession, as train.py's is (so the plan, its time budget
and plan.json are decided the same way), with one addition: an epoch-end
callback writes the selection metric (a val metric, never test) to the report pipe and reads the
sweep's answer, ``go`` or ``prune``, on stdin. No test evaluation happens here: the trial
writes ``trial.json`` with its best val value, and test is evaluated only by ``sweep.py --final-test``.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import logging
import os
import signal
import sys

from trainkit.config import formats
from trainkit.cli import one_line_errors, setup_logging
from trainkit.train.callbacks import StopTraining
from trainkit.train.session import RunSession, refuse_selection_on_test

log = logging.getLogger("trainkit")
PR_SET_PDEATHSIG = 1
PRUNED = "pruned"
__all__ = ["PruneReporter", "metric_key", "refuse_selection_on_test", "main"]


def metric_key(metric: str) -> str:
    """Checkpointer metric (top1, loss, ema_top1, ema_loss) -> its column in the epoch row."""
    return f"ema_val_{metric[4:]}" if metric.startswith("ema_") else f"val_{metric}"


class PruneReporter:
    """Epoch-end callback: send {epoch, value} to the sweep, stop the run when it answers ``prune``."""

    def __init__(self, metric: str, epochs: int, report, answers):
        self.key, self.epochs, self.report, self.answers = metric_key(metric), epochs, report, answers

    def __call__(self, row: dict) -> None:
        if self.key not in row:       # no val evaluation this epoch (train.eval_every_epochs)
            return
        # After the last epoch there is nothing left to save: the sweep records the value, never prunes.
        last = row["epoch"] >= self.epochs
        self.report.write(json.dumps({"epoch": row["epoch"], "value": row[self.key], "last": last}) + "\n")
        self.report.flush()
        answer = self.answers.readline().strip()
        if answer == "prune":
            raise StopTraining(f"pruned by the sweep at epoch {row['epoch']} ({self.key} {row[self.key]:.2f})")


def die_with_parent() -> None:
    """Linux: get SIGKILL when the sweep process dies, however it dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return     # not Linux: an orphan finishes its trial into a folder nobody reads
    parent = os.environ.get("TRAINKIT_SWEEP_PID")
    if parent and os.getppid() != int(parent):     # the sweep died before prctl took effect
        os._exit(1)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--report-fd", type=int, required=True, help="pipe for per-epoch val values")
    return p.parse_args(argv)


@one_line_errors
def main() -> int:
    die_with_parent()
    args = parse_args(sys.argv[1:])
    setup_logging()
    session = RunSession.open(args.recipe, args.overrides, sweep_trial=True)
    trainer, plan, run_dir = session.trainer, session.plan, session.run_dir
    with os.fdopen(args.report_fd, "w") as report:
        trainer.epoch_end.append(PruneReporter(session.recipe.train.best_metric, plan.epochs, report, sys.stdin))
        last = trainer.fit()
    ck = trainer.checkpointer
    # the trial's row in TensorBoard's HParams tab (the summary, which writes a run's, is not made for a trial)
    trainer.logger.hparams(dataclasses.asdict(session.recipe), {f"best_val_{ck.metric}": ck.best_value,
                                                                "train_time_s": trainer.train_seconds})
    trainer.logger.close()
    result = {"split": "val", "metric": ck.metric, "value": ck.best_value, "best_epoch": ck.best_epoch,
              "epochs_run": last.get("epoch", 0), "epochs": plan.epochs, "state": PRUNED if trainer.stopped_early
              else "complete", "train_time_s": trainer.train_seconds, "recipe_hash": plan.recipe_hash}
    formats.write(run_dir / "trial.json", formats.TRIAL, result)
    log.info("trial %s: best val %s %.4f at epoch %s", result["state"], ck.metric, ck.best_value or float("nan"),
             ck.best_epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
