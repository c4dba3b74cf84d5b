"""Shared entry-point plumbing: logging set-up and one-line errors instead of tracebacks."""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from trainkit.config import formats
from trainkit.runtime.checkpoint import CheckpointError
from trainkit.config.schema import RecipeError
from trainkit.data.sources import DataError
from trainkit.train.engine import NonFiniteLoss
from trainkit.runtime.faults import PREEMPTED_EXIT, Preempted
from trainkit.config.registry import UnknownNameError

USER_ERRORS = (RecipeError, DataError, CheckpointError, UnknownNameError, NonFiniteLoss)


class RunFailed(RuntimeError):
    """A train.py run started by another entry point (ablate.py, sweep.py) exited with an error."""


def train_once(recipe: str, overrides: list[str], seed: int, runs_dir: Path, name: str) -> tuple[dict, float]:
    """Run train.py in its own process as ``runs_dir/name`` with ``train.seed=seed``; its summary.json
    and the wall time (start-up, data, training, final evaluation). RunFailed names the last error line."""
    # -m, not a script path: an installed package has no checkout train.py
    cmd = [sys.executable, "-m", "trainkit.commands.train", recipe, *overrides, f"train.seed={seed}",
           f"runtime.out_dir={runs_dir}", f"runtime.run_name={name}", "runtime.progress=false"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise RunFailed(f"seed {seed}: {last}")
    return formats.read(Path(runs_dir) / name / "summary.json", formats.SUMMARY), wall


def setup_logging(quiet: bool = False, threads: int | None = None) -> None:
    """Log lines to stdout; ``threads``: torch's intra-op thread count (None: torch's default)."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stdout,
                        force=True)
    if threads:
        torch.set_num_threads(threads)


def one_line_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Run ``main`` (with the arguments given, e.g. ``argv``); a user error prints ``error: <one line>`` to
    stderr and exits 2."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except USER_ERRORS as err:
            message = " ".join(str(err).split()) or type(err).__name__
            print(f"error: {message}", file=sys.stderr)
            return 2
        except Preempted as err:
            print(f"preempted: {err}", file=sys.stderr)
            return PREEMPTED_EXIT
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
    return wrapper
