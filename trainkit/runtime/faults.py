"""Surviving faults: pick the checkpoint to resume from, and stop cleanly on SIGTERM.

A run folder holds ``last.pt`` (written every epoch and, with
``runtime.checkpoint_every_steps``, every N optimizer steps), ``prev.pt`` (the
``last.pt`` it replaced) and ``best.pt``. All are written atomically, but a file
can still be cut short by a full disk or a partial copy, so resuming loads each
candidate and takes the one furthest into training that loads.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Callable

from trainkit.runtime.checkpoint import CheckpointError, load_checkpoint

log = logging.getLogger(__name__)
PREEMPTED_EXIT = 143          # 128 + SIGTERM: "not finished", so torchrun --max-restarts and schedulers retry


class Preempted(Exception):
    """The run stopped on SIGTERM after saving a checkpoint; resume with ``--resume auto``."""


def progress_key(ckpt: dict) -> tuple[int, int]:
    """How far into training a checkpoint is: (optimizer steps, completed epochs)."""
    return int(ckpt["train_step"]["optimizer_steps"]), int(ckpt["epoch"])


def newest_valid_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of ``run_dir`` furthest into training that loads; None when there is none.

    Unreadable files (truncated, not a checkpoint) are skipped with a warning.
    Ties go to ``last.pt`` (it carries the freshest RNG and best-so-far state).
    """
    run_dir = Path(run_dir)
    best: tuple[tuple, Path] | None = None
    for path in sorted(run_dir.glob("*.pt")):
        try:
            key = (*progress_key(load_checkpoint(path)), path.name == "last.pt")
        except CheckpointError as err:
            log.warning("resume: skipping %s", err)
            continue
        if best is None or key > best[0]:
            best = (key, path)
    return None if best is None else best[1]


class StopOnSigterm:
    """While active, SIGTERM calls ``request_stop`` instead of killing the process.

    The loop then finishes its current optimizer step, all ranks agree to stop,
    rank 0 saves ``last.pt`` and the process exits with :data:`PREEMPTED_EXIT`.
    """

    def __init__(self, request_stop: Callable[[], None]):
        self.request_stop = request_stop
        self._previous = None

    def _handle(self, signum, frame) -> None:
        log.warning("SIGTERM: stopping after this step and saving a checkpoint")
        self.request_stop()

    def __enter__(self) -> "StopOnSigterm":
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)
