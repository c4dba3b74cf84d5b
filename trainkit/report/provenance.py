"""Whether a result can be traced to code: the commit a run names must be clean and in this project's history.

A run's ``summary.json`` says ``git_commit``: 12 hex digits, with ``-dirty`` when the working tree had
uncommitted changes, or ``unknown``. ``compare.py record`` keeps a record only when that commit is an ancestor
of HEAD (``git merge-base --is-ancestor``) and was clean; ``--allow-dirty`` records it anyway, marked in the
record (``commit_problem``) and in RESULTS.md. No torch here: the report layer reads git, never a model.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from trainkit.config.paths import project_root


def _git(args: list[str], repo: Path) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def in_history(commit: str, repo: Path | None = None) -> bool:
    """Whether ``commit`` (a full or abbreviated hash) is HEAD or one of its ancestors in ``repo``."""
    if not commit or not all(c in "0123456789abcdef" for c in commit.lower()):
        return False
    done = _git(["merge-base", "--is-ancestor", commit, "HEAD"], repo or project_root())
    return done is not None and done.returncode == 0


def commit_problem(git_commit: str | None, repo: Path | None = None) -> str | None:
    """None for a clean commit in the history of ``repo`` (default: the project root), else why not, one phrase."""
    commit = str(git_commit or "unknown")
    if commit == "unknown":
        return "no git commit recorded"
    if commit.endswith("-dirty"):
        return f"working tree had uncommitted changes ({commit})"
    if not in_history(commit, repo):
        return f"commit {commit} is not in this repository's history (git log)"
    return None


def commit_that_added(path: Path, repo: Path | None = None) -> str | None:
    """The first commit (12 hex digits) that added ``path``, following renames; None when git does not know it."""
    repo = repo or project_root()
    done = _git(["log", "--follow", "--diff-filter=A", "--format=%H", "--", str(path)], repo)
    lines = done.stdout.split() if done is not None and done.returncode == 0 else []
    return lines[-1][:12] if lines else None


__all__ = ["commit_problem", "commit_that_added", "in_history"]
