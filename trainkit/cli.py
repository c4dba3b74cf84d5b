"""Shared entry-point plumbing: logging set-up and one-line errors instead of tracebacks."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Callable

from trainkit.runtime.checkpoint import CheckpointError
from trainkit.config.schema import RecipeError
from trainkit.data.sources import DataError
from trainkit.train.engine import NonFiniteLoss
from trainkit.runtime.faults import PREEMPTED_EXIT, Preempted
from trainkit.config.registry import UnknownNameError

USER_ERRORS = (RecipeError, DataError, CheckpointError, UnknownNameError, NonFiniteLoss)


def setup_logging(quiet: bool = False) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stdout,
                        force=True)


def log_to_file(path: Path) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)


def one_line_errors(main: Callable[[], int | None]) -> Callable[[], int]:
    """Run ``main``; a user error prints ``error: <one line>`` to stderr and exits 2."""
    @functools.wraps(main)
    def wrapper() -> int:
        try:
            return main() or 0
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
