"""Where the project's files live: recipes, zoo cards, result records, RESULTS.md (the one place that knows).

Everything is found relative to the *project root*, never the current working directory, so every entry point
runs from any directory:

1. ``$TRAINKIT_HOME`` when set (an installed package pointed at a checkout or a copy of its data);
2. otherwise the folder above the ``trainkit`` package when it holds ``recipes/`` (a checkout: the usual case);
3. otherwise the current working directory (an installed package used inside a project folder).

``$TRAINKIT_ZOO`` still overrides the zoo alone (a private or test zoo), and every command that reads or writes
these files also takes an explicit path flag. This module imports nothing but the standard library.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]   # .../trainkit


def project_root() -> Path:
    """The folder holding ``recipes/``, ``zoo/`` and ``results/`` (see the module docstring for the order)."""
    home = os.environ.get("TRAINKIT_HOME")
    if home:
        return Path(home).expanduser().resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "recipes").is_dir():
        return checkout
    return Path.cwd().resolve()


def recipes_dir() -> Path:
    return project_root() / "recipes"


def zoo_dir() -> Path:
    """``$TRAINKIT_ZOO`` (a private or test zoo) or the project's ``zoo/``."""
    zoo = os.environ.get("TRAINKIT_ZOO")
    return Path(zoo) if zoo else project_root() / "zoo"


def records_dir() -> Path:
    """Committed result records: ``results/records/<data set>/<recipe>[--<variant>]-seed<N>.json``."""
    return project_root() / "results" / "records"


def results_md() -> Path:
    return recipes_dir() / "RESULTS.md"


def not_run_notes() -> Path:
    return project_root() / "results" / "not_run.yaml"


def project_file(path: str | Path) -> Path:
    """A path as the user gave it when it exists from the cwd (or is absolute), else the same path below the
    project root: ``recipes/quickstart.yaml`` works from any directory."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    inside = project_root() / path
    return inside if inside.exists() else path


def project_relative(path: str | Path) -> str:
    """``path`` relative to the project root when it lies inside it (how records and cards name files), else as
    given."""
    resolved = Path(path).resolve()
    root = project_root()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(path)


__all__ = ["PACKAGE_DIR", "not_run_notes", "project_file", "project_relative", "project_root",
           "recipes_dir", "records_dir", "results_md", "zoo_dir"]
