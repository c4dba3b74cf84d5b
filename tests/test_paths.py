"""Paths come from the package (trainkit.config.paths), not the working directory: entry points run from any
folder, and $TRAINKIT_HOME points an installed package at another project folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from trainkit.config import paths

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args: str, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    env.pop("TRAINKIT_ZOO", None)
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240, check=False)


def test_project_root_is_the_checkout_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINKIT_HOME", raising=False)
    monkeypatch.delenv("TRAINKIT_ZOO", raising=False)
    monkeypatch.chdir(tmp_path)
    assert paths.project_root() == ROOT
    assert paths.records_dir() == ROOT / "results" / "records" and paths.zoo_dir() == ROOT / "zoo"
    assert paths.project_file("recipes/quickstart.yaml") == ROOT / "recipes" / "quickstart.yaml"
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "quickstart.yaml").write_text("{}")
    assert paths.project_file("recipes/quickstart.yaml") == Path("recipes/quickstart.yaml"), "the cwd's file wins"
    monkeypatch.setenv("TRAINKIT_HOME", str(tmp_path))
    assert paths.project_root() == tmp_path.resolve() and paths.results_md() == tmp_path.resolve() / "recipes" / \
        "RESULTS.md"


def test_entry_points_run_from_another_directory(tmp_path):
    """compare.py results --check reads records, notes, cards and recipes; train.py --print a shipped recipe by
    its project-relative name; both from a folder that holds none of them."""
    out = run("compare.py", "results", "--check", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "up to date" in out.stdout
    out = run("train.py", "recipes/quickstart.yaml", "--print", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "smallcnn" in out.stdout and not list(tmp_path.iterdir()), "--print writes nothing"


def test_trainkit_home_names_another_project(tmp_path):
    home = tmp_path / "home"
    (home / "recipes").mkdir(parents=True)
    (home / "recipes" / "mine.yaml").write_text("base: " + str(ROOT / "recipes" / "quickstart.yaml") +
                                                "\nschedule: {epochs: 3}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run("train.py", "recipes/mine.yaml", "--print", cwd=elsewhere, env_extra={"TRAINKIT_HOME": str(home)})
    assert out.returncode == 0, out.stderr
    assert "epochs: 3" in out.stdout
    out = run("train.py", "recipes/missing.yaml", "--print", cwd=elsewhere, env_extra={"TRAINKIT_HOME": str(home)})
    assert out.returncode == 2 and out.stderr.startswith("error:") and "missing.yaml" in out.stderr
